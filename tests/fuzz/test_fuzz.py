"""decaffe's own fuzz tests: every reader gets seeded mutants (byte flips, truncation,
insertion, duplication, field mutations) in an isolated worker with a memory cap and a time
limit; each must end loaded or with a decaffe error naming its source. CI runs a few cases
per format (seeds other than tools/fuzz.py's default); tools/fuzz.py runs thousands."""

from __future__ import annotations

import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzzlib  # noqa: E402

CI_SEED = 7
CI_COUNT = 4


def test_mutations_are_seeded_and_varied(tmp_path):
    data = bytes(range(256)) * 4
    a = [fuzzlib.mutate(data, random.Random(f"1:x:{i}"), "protobuf") for i in range(30)]
    b = [fuzzlib.mutate(data, random.Random(f"1:x:{i}"), "protobuf") for i in range(30)]
    assert a == b  # a case repeats exactly
    assert len(set(a)) > 25 and all(m != data for m in a[:10])
    text = b'layer { name: "a" type: "ReLU" bottom: "x" top: "x" }\nname: "n"\n'
    t = {fuzzlib.mutate(text, random.Random(i), "text") for i in range(40)}
    assert len(t) > 30
    sizes = {len(fuzzlib.byte_mutation(data, random.Random(i))) for i in range(40)}
    assert min(sizes) < len(data) < max(sizes)  # truncation and insertion both happen
    # field mutations keep the wire structure mostly parseable
    from decaffe.proto import caffe_pb2

    d = caffe_pb2.Datum(channels=3, height=2, width=2, data=b"x" * 12, label=4)
    raw = d.SerializeToString()
    fields = fuzzlib._wire_fields(raw)
    assert {1, 2, 3, 4, 5} <= {f[2] for f in fields}  # nested payloads are walked too
    muts = [fuzzlib.protobuf_mutation(raw, random.Random(i)) for i in range(50)]
    assert sum(m != raw for m in muts) > 40


def test_harness_tells_every_outcome_apart(tmp_path):
    cases = ["named", "unnamed", "other", "crash", "hang", "overcap"]
    seeds = fuzzlib.prepare_seeds(str(tmp_path))
    worker = fuzzlib.Worker(seeds["folder"], fuzzlib.MEMORY_CAP, warm=False)
    try:
        got = {}
        for kind in cases:
            case = fuzzlib.make_case(seeds, f"selftest_{kind}", 0, 0, str(tmp_path))
            got[kind] = worker.run(case, timeout=20.0 if kind != "hang" else 3.0)["outcome"]
    finally:
        worker.stop()
    assert got == {k: k for k in cases}


@pytest.fixture(scope="module")
def ci_report(tmp_path_factory):
    return fuzzlib.run(fuzzlib.available_formats(), CI_COUNT, CI_SEED, timeout=60.0,
                       keep=str(tmp_path_factory.mktemp("fuzz")))


@pytest.mark.parametrize("fmt", fuzzlib.FORMATS)
def test_fuzzed_files_load_or_fail_clearly(ci_report, fmt):
    if fmt not in ci_report.counts:
        pytest.skip(f"{fmt}: its library is not installed")
    counts = ci_report.counts[fmt]
    assert sum(counts.values()) == CI_COUNT
    faults = [f for f in ci_report.faults if f[0] == fmt]
    assert not faults, "\n\n".join(f"[{o}] case {i}: {d}" for _, i, o, d in faults)
