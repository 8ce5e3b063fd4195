"""The deploy form of a train_val / train_test net, as DIGITS and Caffe's model zoo made
deploy files from them:

- the layers of the phase asked for (TEST by default; level and stages as Caffe's NetState
  filters them) are kept, their include/exclude rules removed;
- each data layer (Data, ImageData, HDF5Data, MemoryData, WindowData, AnnotatedData, the
  forks' data layers, a Python layer without bottoms) becomes an Input layer of the same
  name whose tops are the data tops a kept layer reads, shaped as the data layer's batch;
- loss layers (any layer type decaffe knows as a loss, or whose type ends in "Loss") and
  scoring layers (Accuracy, DetectionEvaluate, SegAccuracy, ...) are dropped, and so is every
  layer that then reads a blob no kept layer writes (the label's Slice, a Silence of it).

Each change is a line of ``DeployForm.changes``. A data top's shape is, in this order: the
one given (``input_shapes``), the built net's blob (``net``), the data layer's own source
when it can be read here (the layer is set up alone), or its parameters: MemoryData's
batch/channels/height/width, DummyData's shapes, and for the image data layers batch ×
channels × crop_size (or new_height × new_width), channels from mean_value's count, is_color,
or force_color/force_gray. Anything else raises DeployError naming the layer, the top and
the -input_shape that gives it.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import NetError
from ..formats import prototxt
from ..layer import layer_class
from ..net import Net, filter_net
from ..proto import caffe_pb2
from .registry import ExportError

# layers that score the net against labels: never part of a deploy net
SCORING_TYPES = {"Accuracy", "DetectionEvaluate", "SegAccuracy", "BoxAnnotatorOHEM"}
# data layers that are part of a deploy graph as they are
KEPT_SOURCES = {"Input", "DummyData", "Parameter"}
# {data top: shape} given for the tops whose shapes the net cannot tell
DataShapes = Mapping[str, Sequence[int]]


class DeployError(ExportError):
    """A train_val net whose deploy form cannot be made (a data shape that is not known)."""


@dataclass
class DeployForm:
    """A deploy NetParameter and the changes that made it from the original, one per line."""

    param: caffe_pb2.NetParameter
    changes: list[str] = field(default_factory=list)
    # {input top: shape} of the Input layers that replaced data layers
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def text(self) -> str:
        return prototxt.to_text(self.param)


def _layer_cls(lp: caffe_pb2.LayerParameter):
    try:
        return layer_class(lp.type, lp.name)
    except NetError:
        return None


def is_scoring(lp: caffe_pb2.LayerParameter) -> bool:
    """A loss or accuracy-like layer (by decaffe's class, else by its type's name)."""
    cls = _layer_cls(lp)
    if cls is not None and getattr(cls, "is_loss", False):
        return True
    return lp.type in SCORING_TYPES or lp.type.endswith("Loss")


def is_data_source(lp: caffe_pb2.LayerParameter) -> bool:
    """A layer that reads its tops from files or a database (not Input/DummyData)."""
    if lp.type in KEPT_SOURCES or len(lp.bottom):
        return False
    if lp.type == "Python":
        return True
    cls = _layer_cls(lp)
    return bool(cls is not None and getattr(cls, "is_data", False))


def needs_deploy_form(param: caffe_pb2.NetParameter, phase: int = caffe_pb2.TEST, level: int = 0,
                      stages: Iterable[str] = ()) -> bool:
    """Whether the net (in that phase) has data or loss/scoring layers."""
    filtered = filter_net(param, _state(phase, level, stages))
    return any(is_data_source(lp) or is_scoring(lp) for lp in filtered.layer)


def _state(phase: int, level: int, stages: Iterable[str]):
    state = caffe_pb2.NetState(phase=phase, level=level)
    state.stage.extend(stages)
    return state


def _phase_name(phase: int) -> str:
    return caffe_pb2.Phase.Name(phase)


def deploy_form(param: caffe_pb2.NetParameter, input_shapes: DataShapes | None = None,
                phase: int = caffe_pb2.TEST, level: int = 0, stages: Iterable[str] = (),
                net: Net | None = None) -> DeployForm:
    """The deploy form of a (train_val) NetParameter; see the module docstring.

    input_shapes: {top: shape} for data tops; net: a built Net of this param whose blob
    shapes are the data shapes. Raises DeployError for a data top of unknown shape, or when
    nothing but data and scoring layers would remain."""
    input_shapes = dict(input_shapes or {})
    filtered = filter_net(param, _state(phase, level, stages))
    form = DeployForm(caffe_pb2.NetParameter())
    out = form.param
    out.CopyFrom(filtered)
    del out.layer[:]
    out.ClearField("state")
    left = len(param.layer) - len(filtered.layer)
    if left:
        form.changes.append(f"left out {left} layer(s) not in the {_phase_name(phase)} phase")
    available: set[str] = set(filtered.input)
    data_tops: dict[str, tuple] = {}  # top -> (data layer, top index)
    kept = []
    for lp in filtered.layer:
        if is_data_source(lp):
            for k, t in enumerate(lp.top):
                data_tops[t] = (lp, k)
                available.add(t)
            kept.append(lp)
            continue
        if is_scoring(lp):
            form.changes.append(f"dropped layer '{lp.name}' ({lp.type}): a loss or scoring "
                                "layer")
            continue
        missing = [b for b in lp.bottom if b not in available]
        if missing:
            form.changes.append(f"dropped layer '{lp.name}' ({lp.type}): it reads "
                                f"{', '.join(repr(m) for m in missing)}, which the deploy net "
                                "no longer has")
            continue
        available.update(lp.top)
        kept.append(lp)
    read = {b for lp in kept if not is_data_source(lp) for b in lp.bottom}
    for lp in kept:
        if not is_data_source(lp):
            new = out.layer.add()
            new.CopyFrom(lp)
            new.ClearField("include")
            new.ClearField("exclude")
            continue
        tops = [t for t in lp.top if t in read]
        unused = [t for t in lp.top if t not in read]
        if not tops:
            form.changes.append(f"dropped layer '{lp.name}' ({lp.type}): no kept layer reads "
                                "its tops")
            continue
        shapes = [_data_shape(lp, list(lp.top).index(t), t, input_shapes, net) for t in tops]
        new = out.layer.add()
        new.name, new.type = lp.name, "Input"
        new.top.extend(tops)
        for s in shapes:
            new.input_param.shape.add().dim.extend(s)
        for t, s in zip(tops, shapes):
            form.shapes[t] = tuple(s)
        dropped = f" (dropped {', '.join(repr(t) for t in unused)})" if unused else ""
        form.changes.append(f"layer '{lp.name}' ({lp.type}) -> Input "
                            + ", ".join(f"'{t}' {tuple(s)}" for t, s in zip(tops, shapes))
                            + dropped)
    if not any(lp.type != "Input" for lp in out.layer):
        raise DeployError("the net has only data and loss/scoring layers in the "
                          f"{_phase_name(phase)} phase: no deploy form is left")
    return form


def _data_shape(lp: caffe_pb2.LayerParameter, k: int, top: str, given: DataShapes,
                net: Net | None) -> list[int]:
    if top in given:
        return [int(d) for d in given[top]]
    if net is not None and top in getattr(net, "blobs", {}):
        return [int(d) for d in net.blobs[top].shape]
    shape = _shape_from_source(lp, k)
    if shape is None:
        shape = _shape_from_params(lp, k)
    if shape is None:
        where = _source_of(lp)
        raise DeployError(f"the shape of its top '{top}' comes from its data{where}, which "
                          f"cannot be read here; give it with -input_shape {top}:N,C,H,W "
                          "(input_shapes in Python)", layer=lp.name, type=lp.type)
    return shape


def _source_of(lp: caffe_pb2.LayerParameter) -> str:
    for name in ("data_param", "image_data_param", "hdf5_data_param", "window_data_param"):
        if lp.HasField(name) and getattr(lp, name).source:
            return f" source '{getattr(lp, name).source}'"
    return ""


def _shape_from_source(lp: caffe_pb2.LayerParameter, k: int) -> list[int] | None:
    """The top's shape with the data layer set up alone (reads its source where it exists);
    None when that fails (a missing database, a Python module not importable)."""
    if lp.type == "Python":
        return None
    one = caffe_pb2.NetParameter(name="data")
    layer = one.layer.add()
    layer.CopyFrom(lp)
    layer.ClearField("include")
    layer.ClearField("exclude")
    quiet = logging.getLogger("decaffe")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            built = Net(one, caffe_pb2.TEST)
        shape = [int(d) for d in built.blobs[lp.top[k]].shape]
        close = getattr(built, "close", None)
        if close is not None:
            close()
        return shape
    except Exception:  # any failure to read the source: the parameters may still say
        return None
    finally:
        quiet.setLevel(level)


def _shape_from_params(lp: caffe_pb2.LayerParameter, k: int) -> list[int] | None:
    if lp.type == "MemoryData" and k == 0:
        p = lp.memory_data_param
        return [p.batch_size, p.channels, p.height, p.width]
    if k != 0:
        return None
    tp = lp.transform_param
    if lp.type == "ImageData":
        batch = lp.image_data_param.batch_size
        channels = 3 if lp.image_data_param.is_color else 1
        hw = (lp.image_data_param.new_height, lp.image_data_param.new_width)
    elif lp.type in ("Data", "WindowData", "AnnotatedData"):
        batch = (lp.window_data_param.batch_size if lp.type == "WindowData"
                 else lp.data_param.batch_size)
        channels = 3 if lp.type == "WindowData" else None
        hw = (0, 0)
    else:
        return None
    if len(tp.mean_value) > 1:
        channels = len(tp.mean_value)
    elif tp.force_color:
        channels = 3
    elif tp.force_gray:
        channels = 1
    if tp.crop_size:
        hw = (tp.crop_size, tp.crop_size)
    if channels is None or not all(hw) or not batch:
        return None
    return [batch, channels, hw[0], hw[1]]


def without_splits(param: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A built net's NetParameter without the Split layers the net inserted (each consumer
    reads the split blob's source again), as it was written."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    source: dict[str, str] = {}
    for lp in param.layer:
        if lp.type == "Split" and lp.name.endswith("_split") and len(lp.bottom) == 1:
            for t in lp.top:
                source[t] = source.get(lp.bottom[0], lp.bottom[0])
            continue
        new = out.layer.add()
        new.CopyFrom(lp)
        for j, b in enumerate(lp.bottom):
            new.bottom[j] = source.get(b, b)
    return out


def net_has_training_layers(net: Net) -> bool:
    """Whether a built net has data-source or loss/scoring layers."""
    return any(is_data_source(lp) or is_scoring(lp)
               for lp in without_splits(net.net_param).layer)


def deploy_net_of(net: Net, input_shapes: DataShapes | None = None) -> tuple:
    """(the deploy form of a built net as a new TEST-phase Net sharing its weights' values,
    the DeployForm). Data shapes are the built net's blobs' unless input_shapes gives them."""
    form = deploy_form(without_splits(net.net_param), input_shapes, phase=net.phase,
                       net=net)
    new = Net(form.param, caffe_pb2.TEST)
    for name, blobs in new.params.items():
        for mine, theirs in zip(blobs, net.params[name]):
            mine.data[...] = theirs.data
    return new, form
