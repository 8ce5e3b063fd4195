"""Every registered layer type's class documents itself the same way (CONTRIBUTING, "Adding a
layer"): one line of semantics, then Bottoms, Tops, Blobs, Params and the Caffe or fork
source it follows, each a section opening its own line, in that order."""

import inspect
import re

import pytest

from decaffe import layer

SECTIONS = ("Bottoms:", "Tops:", "Blobs:", "Params:", "Source:")


def _sections_out_of_place(doc: str) -> list[str]:
    """What is wrong with a class docstring's layout; empty when it is right."""
    lines = doc.splitlines()
    problems = []
    if not lines or not lines[0].strip():
        problems.append("no one-line summary on the docstring's first line")
    elif len(lines) > 1 and lines[1].strip():
        problems.append("the summary runs past one line (no blank line after it)")
    where = []
    for name in SECTIONS:
        at = [i for i, line in enumerate(lines) if re.match(rf"\s*{name}(\s|$)", line)]
        if len(at) != 1:
            problems.append(f"{name} opens {len(at)} lines, not 1")
        else:
            where.append(at[0])
    if len(where) == len(SECTIONS) and where != sorted(where):
        problems.append(f"sections out of order: want {', '.join(SECTIONS)}")
    return problems


def _types() -> list[str]:
    return layer.layer_type_list()


@pytest.mark.parametrize("type_name", _types())
def test_layer_docstring_has_its_sections(type_name):
    cls = layer.layer_class(type_name)
    # a class's own docstring: __doc__ is not inherited, so a thin subclass needs its own
    doc = inspect.cleandoc(cls.__doc__ or "")
    problems = _sections_out_of_place(doc)
    assert not problems, (f"{type_name} ({cls.__module__}.{cls.__qualname__}): "
                          + "; ".join(problems))


def test_the_check_finds_a_section_missing_or_out_of_order():
    good = "One line.\n\nBottoms: x.\nTops: y.\nBlobs: none.\nParams: none.\nSource: a.cpp."
    assert _sections_out_of_place(good) == []
    assert _sections_out_of_place(good.replace("Blobs: none.\n", ""))
    swapped = "One line.\n\nBottoms: x.\nBlobs: none.\nTops: y.\nParams: none.\nSource: a.cpp."
    assert _sections_out_of_place(swapped)
    assert _sections_out_of_place(good.replace("Tops:", "Top:"))
    assert _sections_out_of_place("\n" + good)
    assert _sections_out_of_place(good.replace("One line.\n", "One\nline.\n"))
