"""Net: a torch.nn.Module built from a NetParameter, with Caffe's semantics and pycaffe's API.

Building follows Caffe's Net::Init: filter layers by the NetState (phase, level,
stages), insert Split layers where a blob feeds several consumers, then set up
each layer in order, wiring bottoms and tops by name (a top named like the
bottom at the same index is computed in place), recording loss weights and
parameters (shared by name), and deciding which layers and bottoms need a
backward pass exactly as Caffe does.

Running: each layer's forward is torch code. Blobs are rebound to each layer's
outputs, so ``net.blobs[name].data`` after a pass is what Caffe would show
(for an in-place chain, the last layer's output). Two backward paths exist:

- ``backward()`` (pycaffe): layer by layer from the diffs held in the blobs,
  filling every bottom diff as Caffe does, parameter diffs accumulating;
- ``forward_backward()`` (the solver's path): one autograd pass from the
  weighted losses into the parameters' gradients, no intermediate diffs kept.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from . import backward as _backward
from . import items as _items
from . import log, precision, threads
from . import mode as _mode
from .blob import Blob, ParamBlob, diff_is_private, own_diffs
from .errors import DecaffeError, NetError, suggest
from .formats import prototxt, upgrade
from .formats import weights as wfmt
from .formats.weights import blobproto_message_to_record, shapes_match
from .layer import Layer, layer_class
from .net_args import net_init_args
from .proto import caffe_pb2

TRAIN, TEST = _mode.TRAIN, _mode.TEST

# What Net() builds from: a prototxt path (str, bytes or path-like) or a NetParameter
NetSource = str | bytes | os.PathLike[str] | caffe_pb2.NetParameter


class _Runner(Protocol):
    def run(self, layer: int) -> object: ...


# A layer callback: fn(layer_index), or an object with run(layer_index) (Net::Callback, NCCL)
LayerCallback = Callable[[int], object] | _Runner


# ----------------------------------------------------------------------------------------------
# NetState filtering and split insertion (Caffe's FilterNet / InsertSplits)
# ----------------------------------------------------------------------------------------------
def state_meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    """Whether a NetState satisfies one include/exclude NetStateRule."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(param: caffe_pb2.NetParameter,
               state: caffe_pb2.NetState | None = None) -> caffe_pb2.NetParameter:
    """A copy of param keeping only the layers the NetState (default: param.state) includes."""
    state = state if state is not None else param.state
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for lp in param.layer:
        if len(lp.include) and len(lp.exclude):
            raise NetError("specify either include rules or exclude rules, not both", layer=lp.name)
        included = not len(lp.include)
        if included and any(state_meets_rule(state, r) for r in lp.exclude):
            included = False
        if not included and any(state_meets_rule(state, r) for r in lp.include):
            included = True
        if included:
            out.layer.add().CopyFrom(lp)
    return out


def _split_layer_name(layer_name: str, blob_name: str, top_index: int) -> str:
    return f"{blob_name}_{layer_name}_{top_index}_split"


def _split_blob_name(layer_name: str, blob_name: str, top_index: int, k: int) -> str:
    return f"{blob_name}_{layer_name}_{top_index}_split_{k}"


def insert_splits(param: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A copy of param with a Split layer after every top read by more than one consumer.

    A top with an explicit non-zero loss_weight counts as one consumer, as in Caffe;
    names follow Caffe's ``{blob}_{layer}_{index}_split[_k]`` pattern.
    """
    last_top: dict[str, tuple[int, int]] = {}
    source_of: dict[tuple[int, int], tuple[int, int]] = {}
    consumers: collections.Counter = collections.Counter()
    loss_weight_of: dict[tuple[int, int], float] = {}
    for i, lp in enumerate(param.layer):
        for j, name in enumerate(lp.bottom):
            if name not in last_top:
                raise NetError(f"unknown bottom blob '{name}' (bottom index {j}); "
                               f"no earlier layer produces it{suggest(name, last_top)}",
                               layer=lp.name, blob=name)
            src = last_top[name]
            source_of[(i, j)] = src
            consumers[src] += 1
        for j, name in enumerate(lp.top):
            last_top[name] = (i, j)
        for j in range(min(len(lp.loss_weight), len(lp.top))):
            src = last_top[lp.top[j]]
            loss_weight_of[src] = lp.loss_weight[j]
            if lp.loss_weight[j]:
                consumers[src] += 1
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    next_split: collections.Counter = collections.Counter()
    for i, src_lp in enumerate(param.layer):
        lp = out.layer.add()
        lp.CopyFrom(src_lp)
        for j in range(len(lp.bottom)):
            src = source_of[(i, j)]
            if consumers[src] > 1:
                lp.bottom[j] = _split_blob_name(param.layer[src[0]].name, lp.bottom[j], src[1],
                                                next_split[src])
                next_split[src] += 1
        for j in range(len(lp.top)):
            count = consumers[(i, j)]
            if count <= 1:
                continue
            weight = loss_weight_of.get((i, j), 0.0)
            split = out.layer.add()
            split.name = _split_layer_name(lp.name, lp.top[j], j)
            split.type = "Split"
            split.bottom.append(lp.top[j])
            for k in range(count):
                split.top.append(_split_blob_name(lp.name, lp.top[j], j, k))
                if weight:
                    split.loss_weight.append(weight if k == 0 else 0.0)
            if weight:
                del lp.loss_weight[:]
                next_split[(i, j)] += 1
    return out


def load_net_param(source: NetSource) -> caffe_pb2.NetParameter:
    """A NetParameter from a prototxt path, prototxt text or message, upgraded as Caffe does."""
    if isinstance(source, caffe_pb2.NetParameter):
        p = caffe_pb2.NetParameter()
        p.CopyFrom(source)
        if upgrade.net_needs_upgrade(p):
            upgrade.upgrade_net(p)
        return p
    if isinstance(source, (bytes, os.PathLike)):
        source = os.fsdecode(source)
    if isinstance(source, str):
        return prototxt.read_net(source)
    raise DecaffeError(f"cannot build a net from {type(source).__name__}")


# ----------------------------------------------------------------------------------------------
# pycaffe's view of a layer
# ----------------------------------------------------------------------------------------------
def _naming_layer(e: DecaffeError, layer: str) -> NetError:
    """A helper's bare DecaffeError (a filler, a blob-size check) raised while a layer sets
    up, as a NetError naming that layer."""
    msg = str(e)
    for where in (f"layer '{layer}', ", f"layer '{layer}': ", f"{layer}: "):
        if msg.startswith(where):
            msg = msg[len(where):]
            break
    return NetError(msg, layer=layer)


@dataclasses.dataclass(frozen=True, slots=True)
class LayerRecord:
    """One layer of a built net, read-only: what Caffe's Net keeps for it across its
    per-layer vectors (layers_, layer_names_, bottom_id_vecs_, top_id_vecs_, param blobs,
    loss weights, layer_need_backward_, bottom_need_backward_; net.cpp's Init).

    ``bottoms``/``tops`` index the net's blobs (``net._blobs``, ``net.blobs`` in order; a top
    equal to a bottom is computed in place), with their names beside them; ``params`` are
    pycaffe's views of the parameter blobs (``net.params[name]``), ``param_specs`` their
    ParamSpecs (default ones where the prototxt gives fewer), ``param_ids`` their indices
    into ``net.learnable_params`` (a shared blob gives its owner's), ``param_need_grad``
    whether a pass computes their gradient; ``loss_weights`` one per top (0: not a loss);
    ``need_backward``/``bottom_need_backward`` Caffe's backward decisions (after
    propagate_down and force_backward); ``is_input`` for Input layers, whose tops the user
    fills.
    """

    index: int
    name: str
    layer: Layer
    bottoms: tuple[int, ...]
    tops: tuple[int, ...]
    bottom_names: tuple[str, ...]
    top_names: tuple[str, ...]
    params: tuple[ParamBlob, ...]
    param_specs: tuple
    param_ids: tuple[int, ...]
    param_need_grad: tuple[bool, ...]
    loss_weights: tuple[float, ...]
    need_backward: bool
    bottom_need_backward: tuple[bool, ...]
    is_input: bool

    @property
    def type(self) -> str:
        """The layer's type name (``Convolution``, ...)."""
        return self.layer.type


@dataclasses.dataclass
class _Wiring:
    """A layer's record while Net._build fills it in, step by step as Caffe's Init does."""

    index: int
    lp: caffe_pb2.LayerParameter
    layer: Layer
    bottoms: list[int] = dataclasses.field(default_factory=list)
    tops: list[int] = dataclasses.field(default_factory=list)
    bottom_need_backward: list[bool] = dataclasses.field(default_factory=list)
    need_backward: bool = False
    loss_weights: list[float] = dataclasses.field(default_factory=list)
    param_specs: list = dataclasses.field(default_factory=list)
    param_ids: list[int] = dataclasses.field(default_factory=list)
    param_need_grad: list[bool] = dataclasses.field(default_factory=list)

    def freeze(self, net: Net) -> LayerRecord:
        names = net._blob_names
        return LayerRecord(
            index=self.index, name=self.lp.name, layer=self.layer, bottoms=tuple(self.bottoms),
            tops=tuple(self.tops), bottom_names=tuple(names[b] for b in self.bottoms),
            top_names=tuple(names[t] for t in self.tops),
            params=tuple(ParamBlob(p, name=f"{self.lp.name}/{k}", owner=net)
                         for k, p in enumerate(self.layer.blob_params)),
            param_specs=tuple(self.param_specs), param_ids=tuple(self.param_ids),
            param_need_grad=tuple(self.param_need_grad), loss_weights=tuple(self.loss_weights),
            need_backward=self.need_backward,
            bottom_need_backward=tuple(self.bottom_need_backward),
            is_input=self.lp.type == "Input")


class LayerView:
    """What pycaffe's net.layers[i] gives for a layer written in C++: ``type``, ``blobs`` (its
    parameter Blobs) and ``setup``/``reshape`` on lists of Blobs (pycaffe's Layer binding);
    ``name`` and ``layer`` (the decaffe Layer) besides."""

    def __init__(self, net: Net, index: int) -> None:
        self._net, self._index = net, index

    @property
    def layer(self) -> Layer:
        return self._net._layers[self._index]

    @property
    def type(self) -> str:
        return self.layer.type

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def blobs(self) -> list[ParamBlob]:
        return list(self._net._records[self._index].params)

    def setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        self.layer.setup([b.shape for b in bottom])
        self.reshape(bottom, top)

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        shapes = self.layer.reshape([b.shape for b in bottom])
        for t, s in zip(top, shapes):
            t.reshape(*s)

    def __repr__(self) -> str:
        return f"<Layer {self.name!r} type={self.type!r}>"


# ----------------------------------------------------------------------------------------------
# The Net
# ----------------------------------------------------------------------------------------------
class Net(torch.nn.Module):
    """A Caffe net. pycaffe's constructors all work:

    ``Net(prototxt, phase)``, ``Net(prototxt, weights, phase)`` (weights may be None),
    ``Net(prototxt, phase, level=0, stages=None, weights=None)`` (also by position or with
    ``network_file=``), and ``Net(net_parameter_message)`` (phase, level and stages taken from
    its state). Other argument lists raise DecaffeError naming the argument.
    """

    # TEST phase on the CPU: compute so that an item's outputs do not depend on the other
    # items of the batch, as Caffe's per-image computation gives (False: a little faster)
    items_apart: bool = True

    def __init__(self, network: NetSource | None = None, *args: object,
                 network_file: NetSource | None = None, phase: int | None = None,
                 weights: str | os.PathLike[str] | None = None, level: int | None = None,
                 stages: Sequence[str] | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if (network is None) == (network_file is None):
            raise DecaffeError("Net(): give the network (a prototxt path) once, by position or "
                               "as network_file=")
        network = network if network is not None else network_file
        threads.on_first_use()  # the load-aware thread count, unless the user chose one
        # pycaffe's forms: (file, phase, level, stages, weights) and (file, weights, phase)
        phase, weights, level, stages = net_init_args(args, phase, weights, level, stages)
        param = load_net_param(network)
        self.source = network if isinstance(network, str) else None
        if phase is not None:
            param.state.phase = phase
        elif not isinstance(network, caffe_pb2.NetParameter):
            raise DecaffeError("Net(prototxt, ...): a phase (caffe.TRAIN or caffe.TEST) is "
                               "required")
        if level is not None:
            param.state.level = int(level)
        if stages is not None:
            del param.state.stage[:]
            param.state.stage.extend(stages)
        self._dtype = dtype
        self._device = torch.device("cpu")
        self._dirty_blobs: set[Blob] = set()
        self._compiled = None  # decaffe.compile's passes, when -compile is on
        self._loss_scale = 1.0  # fp16 training: the loss scaler's factor
        try:
            self._build(param)
            if weights is not None:
                self.copy_from(weights)
        except BaseException:
            # a net that fails to build releases what its layers opened (databases, threads)
            for layer in [*getattr(self, "_layers", ()), getattr(self, "_building", None)]:
                close = getattr(layer, "close", None)
                if callable(close):
                    close()
            raise
        finally:
            self.__dict__.pop("_building", None)

    # -- construction (Caffe's Net::Init, step by step) -------------------------------------------
    def _build(self, in_param: caffe_pb2.NetParameter) -> None:
        """Caffe's Net::Init: filter the layers by the NetState, insert splits, then for each
        layer create it, append its bottoms and tops, set it up, set its loss weights and
        append its parameters; finally decide which layers and bottoms need backward."""
        param = self._init_tables(in_param)
        available: set[str] = set()  # blobs produced and not yet consumed: the outputs
        wiring: list[_Wiring] = []
        for li, lp in enumerate(param.layer):
            w = self._create_layer(li, lp)
            for j in range(len(lp.bottom)):
                self._append_bottom(w, j, available)
            for j in range(len(lp.top)):
                self._append_top(w, j, available)
            self._setup_layer(w)
            self._set_loss_weights(w)
            if len(lp.blobs) and lp.type not in ("RNN", "LSTM"):
                self._load_definition_blobs(w.layer, lp)
            if self._dtype != torch.float32:
                w.layer.to(self._dtype)
            if len(lp.param) > w.layer.num_blobs:
                raise NetError(f"{len(lp.param)} param specs given for {w.layer.num_blobs} "
                               "parameter blobs", layer=lp.name)
            for k in range(w.layer.num_blobs):
                self._append_param(w, k)
            self._layers.append(w.layer)
            self.__dict__.pop("_building", None)
            wiring.append(w)
            if w.need_backward:
                for tid in w.tops:
                    self._blob_need_backward[tid] = True
            if lp.type == "Input":
                self._input_ids.extend(w.tops)
        self._decide_backward(wiring, param.force_backward)
        self._records: tuple[LayerRecord, ...] = tuple(w.freeze(self) for w in wiring)
        self._output_ids = [self._blob_index[n] for n in sorted(available)]
        self._output_set = set(self._output_ids)
        self._init_losses()
        self._fill_loss_diffs()
        self._set_requires_grad()
        self._io: list = [None] * len(self._records)
        self._fused = self._find_fusions()
        # pycaffe's per-layer callbacks: before/after_forward/backward(fn(layer_index))
        self._callbacks: dict[str, list] = {"before_forward": [], "after_forward": [],
                                            "before_backward": [], "after_backward": []}
        self._needs_graph = any(rec.need_backward for rec in self._records)
        del self._shapes

    def _init_tables(self, in_param: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
        """The net's state and empty tables; returns the layers to build (filtered, split)."""
        self.phase = in_param.state.phase
        self.state = caffe_pb2.NetState()
        self.state.CopyFrom(in_param.state)
        param = insert_splits(filter_net(in_param))
        self.net_param = param  # the layers as built (splits included), as Caffe keeps them
        self.name = param.name
        self.force_backward = param.force_backward
        self.debug_info = param.debug_info
        self._layers = torch.nn.ModuleList()  # the layers as submodules (state_dict, .to)
        self._records = ()
        # blobs, by index
        self._blob_names: list[str] = []
        self._blob_index: dict[str, int] = {}
        self._blob_list: list[Blob] = []
        self._blob_need_backward: list[bool] = []
        self._input_ids: list[int] = []
        self._shapes: dict[int, tuple] = {}  # blob shapes while building
        # learnable parameters in Caffe's order (owners only), with their multipliers
        self.learnable_params: list[torch.nn.Parameter] = []
        self.params_lr: list[float] = []
        self.params_weight_decay: list[float] = []
        self._has_lr: list[bool] = []
        self._has_decay: list[bool] = []
        # a shared parameter's name: its owner (layer, blob index) and learnable index
        self._param_owners: dict[str, tuple[Layer, int, int]] = {}
        return param

    def _create_layer(self, li: int, lp: caffe_pb2.LayerParameter) -> _Wiring:
        """Caffe's LayerRegistry::CreateLayer, with the checks Init makes before wiring."""
        if not lp.HasField("phase"):
            lp.phase = self.phase
        if len(lp.propagate_down) and len(lp.propagate_down) != len(lp.bottom):
            raise NetError("propagate_down must be given 0 or bottom-count times "
                           f"({len(lp.propagate_down)} given for {len(lp.bottom)} bottoms)",
                           layer=lp.name)
        layer = layer_class(lp.type, lp.name)(lp, lp.phase)
        self.__dict__["_building"] = layer  # closed with the others if the build fails
        self._check_counts(layer, lp)
        return _Wiring(li, lp, layer)

    def _append_bottom(self, w: _Wiring, j: int, available: set[str]) -> None:
        """Caffe's Net::AppendBottom: wire bottom j to the blob of its name, consuming it;
        the bottom needs backward when its blob does and propagate_down allows."""
        lp = w.lp
        bname = lp.bottom[j]
        if bname not in available:
            raise NetError(f"bottom blob '{bname}' (index {j}) is not produced by any "
                           f"earlier layer{suggest(bname, available)}", layer=lp.name, blob=bname)
        bid = self._blob_index[bname]
        available.discard(bname)
        w.bottoms.append(bid)
        pd = lp.propagate_down[j] if len(lp.propagate_down) else True
        w.bottom_need_backward.append(self._blob_need_backward[bid] and pd)
        w.need_backward |= self._blob_need_backward[bid]

    def _append_top(self, w: _Wiring, j: int, available: set[str]) -> None:
        """Caffe's Net::AppendTop: a new blob, or in place when named like bottom j."""
        lp = w.lp
        tname = lp.top[j]
        if j < len(lp.bottom) and tname == lp.bottom[j]:
            w.tops.append(self._blob_index[tname])  # in place
        elif tname in self._blob_index:
            raise NetError(f"top blob '{tname}' is produced by more than one layer",
                           layer=lp.name, blob=tname)
        else:
            w.tops.append(self._new_blob(tname))
        available.add(tname)

    def _setup_layer(self, w: _Wiring) -> None:
        """Caffe's Layer::SetUp: the layer's setup and reshape from its bottoms' shapes, its
        anonymous extra tops (AutoTopBlobs) made, its top blobs shaped."""
        name = w.lp.name
        top_shapes = self._layer_shapes(w.layer, name, [self._shapes[b] for b in w.bottoms],
                                        setup=True)
        while len(w.tops) < len(top_shapes):
            w.tops.append(self._new_blob(f"(automatic {name} {len(w.tops)})"))
        if len(top_shapes) != len(w.tops):
            raise NetError(f"layer makes {len(top_shapes)} tops, {len(w.tops)} named", layer=name)
        for tid, s in zip(w.tops, top_shapes):
            self._shapes[tid] = tuple(s)
        self._reshape_tops(name, w.tops, top_shapes)

    def _layer_shapes(self, layer: Layer, name: str, bottom_shapes: list,
                      setup: bool) -> list:
        """The layer's top shapes for these bottom shapes (after its setup when setup); the
        one place a layer's setup or reshape error becomes a NetError naming the layer."""
        try:
            if setup:
                layer.setup(bottom_shapes)
            return layer.reshape(bottom_shapes)
        except DecaffeError as e:
            if type(e) is not DecaffeError:
                raise  # already names its source (keeps its cause)
            raise _naming_layer(e, name) from e.__cause__
        except Exception as e:  # a torch shape error deep inside a layer
            if hasattr(e, "_decaffe_python_layer"):
                raise  # a Python layer's own exception goes on as itself
            what = "set up with" if setup else "reshape to"
            raise NetError(f"cannot {what} bottom shapes {bottom_shapes}: {e}",
                           layer=name) from e

    def _reshape_tops(self, name: str, top_ids: Sequence[int], top_shapes: list) -> None:
        for tid, s in zip(top_ids, top_shapes):
            try:
                self._blob_list[tid].reshape(*s)
            except DecaffeError as e:  # a size Caffe refuses, before any allocation
                raise NetError(f"top {e}", layer=name) from None

    def _set_loss_weights(self, w: _Wiring) -> None:
        """Caffe's Layer::SetLossWeights: one weight per top, a loss layer's first top 1 by
        default."""
        lp, layer = w.lp, w.layer
        if layer.is_loss and not len(lp.loss_weight):
            lp.loss_weight.append(1.0)
        if len(lp.loss_weight) and len(lp.loss_weight) != len(w.tops):
            default = " (a loss layer's first top gets loss_weight 1 unless given; give " \
                "one per top, e.g. loss_weight: 1 loss_weight: 0)" if layer.is_loss else ""
            raise NetError(f"loss_weight must be unspecified or specified once per top "
                           f"blob: {len(lp.loss_weight)} given for {len(w.tops)} tops"
                           f"{default}", layer=lp.name)
        w.loss_weights = [lp.loss_weight[j] if j < len(lp.loss_weight) else 0.0
                          for j in range(len(w.tops))]

    def _find_fusions(self) -> dict[int, int]:
        """BatchNorm layers whose output only a per-channel Scale reads, both in place on one
        blob: the solver's passes run the pair as one batch-norm kernel with the Scale's
        blobs as its weight and bias. Nothing visible changes (the blob shows the Scale's
        output either way); pycaffe's forward/backward run the layers one by one."""
        fused = {}
        recs = self._records
        for a, b in zip(recs, recs[1:]):
            bn, sc = a.layer, b.layer
            if bn.type != "BatchNorm" or sc.type != "Scale" or len(b.bottoms) != 1:
                continue
            blob = a.bottoms[0]
            if not (a.tops == (blob,) and b.bottoms == (blob,) and b.tops == (blob,)):
                continue
            span = tuple(sc.blob_params[0].shape)
            if sc.axis != 1 or span != (bn.channels,) or any(a.loss_weights) \
                    or any(b.loss_weights):
                continue
            if a.need_backward != b.need_backward:
                continue
            i = a.index
            fused[i] = i + 1
        return fused

    def _check_counts(self, layer: Layer, lp: caffe_pb2.LayerParameter) -> None:
        nb, nt = len(lp.bottom), len(lp.top)
        for what, n, exact, lo, hi in (("bottom", nb, layer.exact_bottoms, layer.min_bottoms,
                                        layer.max_bottoms),
                                       ("top", nt, layer.exact_tops, layer.min_tops,
                                        layer.max_tops)):
            if what == "top" and getattr(layer, "auto_tops", False):
                continue
            if exact is not None and n != exact:
                raise NetError(f"{layer.type} takes {exact} {what} blob(s), {n} given",
                               layer=lp.name)
            if lo is not None and n < lo:
                raise NetError(f"{layer.type} takes at least {lo} {what} blob(s), {n} given",
                               layer=lp.name)
            if hi is not None and n > hi:
                raise NetError(f"{layer.type} takes at most {hi} {what} blob(s), {n} given",
                               layer=lp.name)

    def _load_definition_blobs(self, layer: Layer, lp: caffe_pb2.LayerParameter) -> None:
        """Blobs written in the layer's definition (a caffemodel's NetParameter, a prototxt
        with `blobs`) are its starting values, as Caffe's Layer constructor reads them
        (recurrent layers excepted: Caffe's replaces them with its unrolled net's). A count
        or a shape the layer cannot use is refused, as Caffe's convolution refuses it."""
        if len(lp.blobs) != layer.num_blobs:
            raise NetError(f"Incorrect number of weight blobs: the definition gives "
                           f"{len(lp.blobs)}, the layer has {layer.num_blobs}", layer=lp.name)
        for k, (p, msg) in enumerate(zip(layer.blob_params, lp.blobs)):
            try:
                rec = blobproto_message_to_record(msg)
            except DecaffeError:
                raise
            except Exception as e:  # a BlobProto whose values and shape disagree
                raise NetError(f"blobs[{k}] in the definition cannot be read: {e}",
                               layer=lp.name) from None
            if not shapes_match(tuple(p.shape), rec.array.shape, rec.legacy):
                raise NetError(f"Incorrect weight shape: expected shape {tuple(p.shape)}; "
                               f"instead, blobs[{k}] in the definition has shape "
                               f"{rec.array.shape}", layer=lp.name)
            with torch.no_grad():
                p.data.copy_(torch.from_numpy(np.ascontiguousarray(rec.array)).reshape(p.shape))

    def _new_blob(self, name: str) -> int:
        bid = len(self._blob_list)
        self._blob_names.append(name)
        self._blob_index[name] = bid
        self._blob_list.append(Blob((), name=name, owner=self, device=self._device,
                                    dtype=self._dtype))
        self._blob_need_backward.append(False)
        return bid

    def _append_param(self, w: _Wiring, k: int) -> None:
        """Caffe's Net::AppendParam: parameter blob k of the layer, a new learnable one, or
        (named like an earlier one) shared with its owner, the multipliers checked."""
        layer, lp = w.layer, w.lp
        spec = lp.param[k] if k < len(lp.param) else caffe_pb2.ParamSpec()
        w.param_specs.append(spec)
        if spec.lr_mult != 0:
            w.need_backward = True
        pname = spec.name
        if not pname or pname not in self._param_owners:
            lid = len(self.learnable_params)
            if pname:
                self._param_owners[pname] = (layer, k, lid)
            w.param_ids.append(lid)
            self.learnable_params.append(layer.blob_params[k])
            self._has_lr.append(spec.HasField("lr_mult"))
            self._has_decay.append(spec.HasField("decay_mult"))
            self.params_lr.append(spec.lr_mult)
            self.params_weight_decay.append(spec.decay_mult)
            return
        owner_layer, ok, lid = self._param_owners[pname]
        owner = owner_layer.blob_params[ok]
        mine = layer.blob_params[k]
        if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
            if owner.numel() != mine.numel():
                raise NetError(f"shared parameter '{pname}' has {mine.numel()} values here and "
                               f"{owner.numel()} in its owner '{owner_layer.name}'",
                               layer=lp.name)
            if owner.shape != mine.shape:
                raise NetError(f"shared parameter '{pname}': shapes {tuple(mine.shape)} and "
                               f"{tuple(owner.shape)} differ; decaffe shares only equal shapes",
                               layer=lp.name)
        elif owner.shape != mine.shape:
            raise NetError(f"shared parameter '{pname}' has shape {tuple(mine.shape)} here and "
                           f"{tuple(owner.shape)} in its owner '{owner_layer.name}'",
                           layer=lp.name)
        layer.blob_params[k] = owner
        w.param_ids.append(lid)
        for has, vals, field in ((self._has_lr, self.params_lr, "lr_mult"),
                                 (self._has_decay, self.params_weight_decay, "decay_mult")):
            if spec.HasField(field):
                value = getattr(spec, field)
                if has[lid] and vals[lid] != value:
                    raise NetError(f"shared parameter '{pname}' has mismatched {field}",
                                   layer=lp.name)
                has[lid] = True
                vals[lid] = value

    def _decide_backward(self, wiring: list[_Wiring], force_backward: bool) -> None:
        """Caffe's pruning: only layers under a loss need backward; force_backward overrides."""
        under_loss: set[int] = set()
        skip: set[int] = set()
        for w in reversed(wiring):
            contributes, skip_down = False, True
            for j, tid in enumerate(w.tops):
                if w.loss_weights[j] or tid in under_loss:
                    contributes = True
                if tid not in skip:
                    skip_down = False
            if w.need_backward and skip_down:
                w.need_backward = False
                w.bottom_need_backward = [False] * len(w.bottoms)
            if not contributes:
                w.need_backward = False
            for j, bid in enumerate(w.bottoms):
                if contributes:
                    under_loss.add(bid)
                else:
                    w.bottom_need_backward[j] = False
                if not w.bottom_need_backward[j]:
                    skip.add(bid)
        for w in wiring:
            w.param_need_grad = [w.need_backward and spec.lr_mult != 0
                                 and k not in w.layer.no_grad_blobs
                                 for k, spec in enumerate(w.param_specs)]
        if force_backward:
            for w in wiring:
                w.need_backward = True
                for j, bid in enumerate(w.bottoms):
                    need = w.bottom_need_backward[j] or w.layer.allow_force_backward(j)
                    w.bottom_need_backward[j] = need
                    self._blob_need_backward[bid] = self._blob_need_backward[bid] or need
                w.param_need_grad = [k not in w.layer.no_grad_blobs
                                     for k in range(w.layer.num_blobs)]

    def _init_losses(self) -> None:
        """Each blob's loss weight, and the weighted tops in Caffe's summing order."""
        self._blob_loss_weight = [0.0] * len(self._blob_list)
        # (layer, top index, blob, weight). A weighted top that a later layer reads goes
        # through a split, so no later layer writes it: a pass reads its value at the end.
        self._loss_terms: list[tuple[int, int, int, float]] = []
        for rec in self._records:
            for j, w in enumerate(rec.loss_weights):
                self._blob_loss_weight[rec.tops[j]] = w
                if w:
                    self._loss_terms.append((rec.index, j, rec.tops[j], w))

    def _set_requires_grad(self) -> None:
        # A shared parameter needs a gradient when any layer using it computes one.
        wanted: dict[int, bool] = {}
        for rec in self._records:
            for k, p in enumerate(rec.layer.blob_params):
                wanted[id(p)] = wanted.get(id(p), False) or rec.param_need_grad[k]
        for rec in self._records:
            for p in rec.layer.blob_params:
                p.requires_grad_(wanted[id(p)])
        # inputs whose gradient some layer asks for (force_backward)
        self._input_needs_grad = {}
        for rec in self._records:
            for j, bid in enumerate(rec.bottoms):
                if rec.bottom_need_backward[j]:
                    self._input_needs_grad[bid] = True

    def _fill_loss_diffs(self) -> None:
        """Caffe fills a loss top's diff with its loss weight at setup."""
        for _, _, tid, w in self._loss_terms:
            self._blob_list[tid].tensor("diff").fill_(w)

    # -- devices --------------------------------------------------------------------------------
    def _ensure_device(self) -> None:
        dev = _mode.device()
        if dev != self._device:
            self.to_device(dev)

    def to_device(self, dev: torch.device) -> None:
        """Move parameters and blobs to dev (done automatically when the mode changes)."""
        if self._compiled is not None:
            self._compiled.materialize()  # the last pass's blobs, made where it ran
        for rec in self._records:
            for b in rec.params:
                b.push()
        self._layers.to(dev)
        for b in self._blob_list:
            b.to(dev)
        for rec in self._records:
            for b in rec.params:
                b.to(dev)
        if precision.channels_last(dev, self._compiled is not None):
            self._to_channels_last()
        self._device = dev
        self._dirty_blobs.clear()
        self._io = [None] * len(self._layers)

    def _to_channels_last(self) -> None:
        """Convolution weights in channels_last order (cuDNN's tensor-core layout)."""
        with torch.no_grad():
            for layer in self._layers:
                if layer.type in ("Convolution", "Deconvolution"):
                    for p in layer.blob_params:
                        if p.dim() == 4:
                            p.data = p.data.contiguous(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return self._device

    def _push_host_writes(self) -> None:
        if self._dirty_blobs:
            for b in list(self._dirty_blobs):
                b.push()
            self._dirty_blobs.clear()

    # -- running --------------------------------------------------------------------------------
    def _stored(self, bid: int, first: int, end: int, keep: bool = False) -> torch.Tensor:
        """Blob bid's tensor as a pass reads it from storage for layers first..end: a copy if
        the blob's memory is handed out and one of those layers writes the blob (in place),
        since that copies into memory that autograd, or a view another layer made, holds;
        keep: a copy whenever it is handed out (a recorded graph must not change with
        writes into the array, which backward looks for)."""
        blob = self._blob_list[bid]
        t = blob.tensor()
        if blob.handed_out:
            writers = self._writers.get(bid, ())
            if keep or any(first <= w <= end for w in writers):
                t = t.clone()
        return t

    @property
    def _batch_item_layers(self) -> frozenset[int]:
        """Layers whose kernels make an item's outputs depend on the batch size
        (Layer.item_group set)."""
        got = self.__dict__.get("_batch_items_cache")
        if got is None:
            got = frozenset(li for li, layer in enumerate(self._layers) if layer.item_group)
            self.__dict__["_batch_items_cache"] = got
        return got

    @property
    def _writers(self) -> dict[int, list[int]]:
        """{blob index: the layers that write it as a top}, in layer order."""
        w = self.__dict__.get("_writers_cache")
        if w is None:
            w = collections.defaultdict(list)
            for rec in self._records:
                for tid in rec.tops:
                    w[tid].append(rec.index)
            self.__dict__["_writers_cache"] = w
        return w

    def _forward_range(self, start: int, end: int, record: bool = True,
                       grad: bool | None = None, fuse: bool = False,
                       cur: dict[int, torch.Tensor] | None = None,
                       bind: bool = True) -> torch.Tensor | None:
        """Run layers start..end (inclusive); returns the weighted loss (a tensor) or None.

        record keeps each layer's inputs and outputs for pycaffe's layer-by-layer backward;
        fuse runs BatchNorm+Scale pairs as one kernel (solver passes only). cur: tensors to
        read instead of the blobs of those indices, filled in with every top the pass makes;
        bind=False leaves the blobs unbound (a compiled pass returns only some tops)."""
        self._ensure_device()
        self._push_host_writes()
        blobs = self._blob_list
        cur = {} if cur is None else cur
        want_grad = self._needs_graph if grad is None else grad
        fused = self._fused if fuse else {}
        items = self._batch_item_layers if self.items_apart and self.phase == TEST and \
            self._device.type == "cpu" else ()
        skip = -1
        low = precision.low_precision_dtype() is not None
        keep = record and want_grad
        records = self._records
        before, after = self._callbacks["before_forward"], self._callbacks["after_forward"]
        with torch.set_grad_enabled(want_grad), precision.autocast(self._device):
            for li in range(start, end + 1):
                if li == skip:
                    continue
                for fn in before:
                    fn(li)
                rec = records[li]
                bottoms = []
                for j, bid in enumerate(rec.bottoms):
                    t = cur.get(bid)
                    if t is None:
                        t = self._stored(bid, li, end, keep)
                        if want_grad and bid in self._input_needs_grad and not t.requires_grad:
                            t = t.detach().requires_grad_()
                        cur[bid] = t
                    if t.requires_grad and not rec.bottom_need_backward[j]:
                        t = t.detach()
                    bottoms.append(t)
                if rec.is_input:
                    # Input tops are the blobs the user fills; they are never rebound.
                    out = []
                    for tid in rec.tops:
                        t = self._stored(tid, li + 1, end, keep)
                        if want_grad and tid in self._input_needs_grad:
                            t = t.detach().requires_grad_()
                        cur[tid] = t
                        out.append(t)
                else:
                    layer = rec.layer
                    with torch.set_grad_enabled(want_grad and rec.need_backward):
                        if li in fused and fused[li] <= end:
                            sc = records[fused[li]].layer
                            out = layer.normalize(bottoms[0], sc.blob_params[0],
                                                  sc.blob_params[1] if sc.bias_term else None)
                            skip = fused[li]
                        elif li in items:
                            out = _items.run(layer, bottoms)
                        else:
                            out = layer(*bottoms)
                    if isinstance(out, torch.Tensor):
                        out = (out,)
                    if low:  # the net's outputs stay float32 under bf16/fp16
                        out = tuple(t.float() if tid in self._output_set and
                                    t.is_floating_point() else t
                                    for tid, t in zip(rec.tops, out))
                    for tid, t in zip(rec.tops, out):
                        cur[tid] = t
                        if bind:
                            blobs[tid].bind(t)
                if record:
                    self._io[li] = (bottoms, out)
                for fn in after:
                    fn(li)
            return self._weighted_loss(cur, start, end)

    def _weighted_loss(self, cur: dict[int, torch.Tensor], start: int,
                       end: int) -> torch.Tensor | None:
        """The sum of the weighted tops that layers start..end made (Caffe's Layer::Forward
        adds loss_weight · sum(top) per top, layer by layer); None without one."""
        loss = None
        for li, _, tid, w in self._loss_terms:
            if start <= li <= end:
                t = cur[tid]
                term = t.float().sum() * w if t.dim() else t.float() * w
                loss = term if loss is None else loss + term
        return loss

    def forward_backward(self) -> float:
        """One forward and one backward pass for the solver; returns the weighted loss.

        Gradients accumulate into the parameters (Caffe's param diffs); no blob diffs are kept.
        """
        # backward adds into the diffs: not into the solver's history
        own_diffs(self.learnable_params)
        if self._compiled is not None:
            loss = self._compiled.forward(grad=True)
        else:
            loss = self._forward_range(0, len(self._layers) - 1, record=False, fuse=True)
        self._io = [None] * len(self._layers)
        if loss is not None and loss.requires_grad:
            (loss * self._loss_scale if self._loss_scale != 1.0 else loss).backward()
        self._restore_dropped_diffs()
        if self._compiled is not None:
            self._compiled.log_compile()  # the first compiled step's time, backward included
        before, after = self._callbacks["before_backward"], self._callbacks["after_backward"]
        if before or after:  # Caffe calls them layer by layer, last layer first
            for li in range(len(self._layers) - 1, -1, -1):
                for fn in before:
                    fn(li)
                for fn in after:
                    fn(li)
        return 0.0 if loss is None else float(loss.detach())

    def forward_loss(self) -> float:
        """A forward pass without a graph (test nets); returns the weighted loss."""
        loss = self._loss_pass(fuse=True)
        return 0.0 if loss is None else float(loss)

    def _loss_pass(self, fuse: bool) -> torch.Tensor | None:
        """A forward pass without a graph, the weighted loss left a tensor (no host
        synchronisation; the solver's test passes), compiled under -compile; fuse: run
        BatchNorm+Scale pairs as one kernel."""
        if self._compiled is not None:
            return self._compiled.forward(grad=False, fuse=fuse)
        return self._forward_range(0, len(self._layers) - 1, record=False, grad=False,
                                   fuse=fuse)

    def _backward_range(self, start: int, end: int) -> None:
        """Caffe's BackwardFromTo: layer by layer, each reading its tops' diffs."""
        # parameter diffs accumulate: not into the solver's history
        own_diffs(self.learnable_params)
        self._push_host_writes()
        records = _backward.Records(self._io, [r.bottoms for r in self._records],
                                    [r.tops for r in self._records], self._blob_list)
        for li in range(start, end - 1, -1):
            for fn in self._callbacks["before_backward"]:
                fn(li)
            self._backward_layer(li, records)
            for fn in self._callbacks["after_backward"]:
                fn(li)

    def _backward_layer(self, li: int, records: _backward.Records) -> None:
        """One layer's backward from its tops' diffs (Caffe's Layer::Backward): on the graph
        the forward recorded while it fits the blobs, else from the blobs' contents."""
        rec = self._records[li]
        if not rec.need_backward:
            return
        layer = rec.layer
        if not records.fits(li, layer):
            blobs = self._blob_list
            _backward.from_blobs(layer, [blobs[b] for b in rec.bottoms],
                                 [blobs[t] for t in rec.tops], rec.bottom_need_backward)
            return
        blobs = self._blob_list
        bottoms, tops = self._io[li]
        if not tops:  # Silence: Caffe zeroes the diffs of the bottoms it swallows
            for j, bid in enumerate(rec.bottoms):
                if rec.bottom_need_backward[j]:
                    blobs[bid].set_diff(torch.zeros_like(bottoms[j]))
            return
        outs, grads = [], []
        for j, t in enumerate(tops):
            if t.requires_grad:
                outs.append(t)
                grads.append(blobs[rec.tops[j]].tensor("diff").reshape(t.shape))
        if not outs:
            return
        want_b = [j for j, b in enumerate(bottoms)
                  if rec.bottom_need_backward[j] and b.requires_grad]
        want_p = [p for p in layer.blob_params if p.requires_grad]
        inputs = [bottoms[j] for j in want_b] + want_p
        if not inputs:
            return
        got = torch.autograd.grad(outs, inputs, grads, retain_graph=True, allow_unused=True)
        # a bottom read twice by one layer gets the sum, as Caffe's split would give
        summed: dict[int, torch.Tensor] = {}
        for j, g in zip(want_b, got[:len(want_b)]):
            bid = rec.bottoms[j]
            if g is None:
                g = torch.zeros_like(bottoms[j])
            summed[bid] = summed[bid] + g if bid in summed else g
        for bid, g in summed.items():
            # may alias the top's diff through a view (Reshape, Flatten): so does Caffe's
            blobs[bid].set_diff(g.detach())
        _backward.add_param_grads(zip(want_p, got[len(want_b):]))

    # -- pycaffe: forward / backward ----------------------------------------------------------
    def _layer_index(self, name: str) -> int:
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise NetError(f"no layer named '{name}'{suggest(name, self._layer_names)}") from None

    def _forward(self, start: int, end: int) -> float:
        if (self._compiled is not None and not self._needs_graph and start == 0
                and end == len(self._layers) - 1):
            loss = self._compiled.forward(grad=False, fuse=False)  # a deploy net, compiled
            return 0.0 if loss is None else float(loss.detach())
        loss = self._forward_range(start, end)
        return 0.0 if loss is None else float(loss.detach())

    def _backward(self, start: int, end: int) -> None:
        self._backward_range(start, end)

    def forward(self, blobs: Iterable[str] | None = None, start: str | None = None,
                end: str | None = None, **kwargs: npt.ArrayLike) -> dict[str, np.ndarray]:
        """pycaffe's Net.forward: optional inputs by name, run layers start..end (names,
        inclusive); returns {name: array} for the net's outputs, or with ``end`` the end
        layer's tops, plus ``blobs`` (BVLC master's pycaffe)."""
        blobs = list(blobs or [])
        start_ind = self._layer_index(start) if start is not None else 0
        if end is not None:
            end_ind = self._layer_index(end)
            outputs = set(self._records[end_ind].top_names) | set(blobs)
        else:
            end_ind = len(self._layers) - 1
            outputs = set(self.outputs + blobs)
        if kwargs:
            if set(kwargs) != set(self.inputs):
                raise DecaffeError(f"input blob arguments {sorted(kwargs)} do not match the "
                                   f"net's inputs {self.inputs}")
            for name, value in kwargs.items():
                if np.shape(value)[0] != self.blobs[name].shape[0]:
                    raise DecaffeError(f"input '{name}' is not batch sized: "
                                       f"{np.shape(value)[0]} vs {self.blobs[name].shape[0]}")
                self.blobs[name].data[...] = value
        self._forward(start_ind, end_ind)
        return {out: self.blobs[out].data for out in outputs}

    def backward(self, diffs: Iterable[str] | None = None, start: str | None = None,
                 end: str | None = None, **kwargs: npt.ArrayLike) -> dict[str, np.ndarray]:
        """pycaffe's Net.backward: optional output diffs by name, run layers start..end
        backwards (names, inclusive); returns {name: diff} for the net's inputs, or with
        ``end`` the end layer's bottoms, plus ``diffs`` (BVLC master's pycaffe)."""
        diffs = list(diffs or [])
        start_ind = self._layer_index(start) if start is not None else len(self._layers) - 1
        if end is not None:
            end_ind = self._layer_index(end)
            outputs = set(self._records[end_ind].bottom_names) | set(diffs)
        else:
            end_ind = 0
            outputs = set(self.inputs + diffs)
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise DecaffeError(f"top diff arguments {sorted(kwargs)} do not match the "
                                   f"net's outputs {self.outputs}")
            for name, value in kwargs.items():
                if np.shape(value)[0] != self.blobs[name].shape[0]:
                    raise DecaffeError(f"diff '{name}' is not batch sized")
                self.blobs[name].diff[...] = value
        self._backward(start_ind, end_ind)
        return {out: self.blobs[out].diff for out in outputs}

    def reshape(self) -> None:
        """Recompute every blob's shape from the inputs' shapes (Caffe's Net::Reshape)."""
        if self._compiled is not None:
            self._compiled.drop()  # the last pass's unmade blobs take the new shapes instead
        shapes = {bid: self._blob_list[bid].shape for bid in self._input_ids}
        for rec in self._records:
            if rec.is_input:
                continue
            bshapes = [shapes.get(bid, self._blob_list[bid].shape) for bid in rec.bottoms]
            tshapes = self._layer_shapes(rec.layer, rec.name, bshapes, setup=False)
            for tid, s in zip(rec.tops, tshapes):
                shapes[tid] = tuple(s)
            self._reshape_tops(rec.name, rec.tops, tshapes)
        self._fill_loss_diffs()

    def close(self) -> None:
        """Stop the net's background work (data layers' prefetch threads); a closed data layer
        refuses further passes. Also done when the net is garbage-collected."""
        for layer in self._layers:
            close = getattr(layer, "close", None)
            if callable(close):
                close()

    def set_iter(self, iteration: int, max_iter: int) -> None:
        """Tell every layer the solver's iteration and max_iter (the eric612 fork's
        per-layer set_iter; used by scheduled layers such as AssistedExcitation)."""
        for layer in self._layers:
            layer.set_iter(int(iteration), int(max_iter))

    def clear_param_diffs(self) -> None:
        # A diff nobody can see is let go rather than zeroed: the next backward then hands
        # its gradient to .grad as it is (no fill, no add; Caffe's 0 + g is g). One whose
        # array was handed out, or a view into a shared buffer (NCCL's), is zeroed in place.
        dropped = []
        for p in self.learnable_params:
            g = p.grad
            if g is None:
                continue
            if diff_is_private(p, g):
                p.grad = None
                dropped.append((p, g))
            elif getattr(g, "_decaffe_history", False):
                p.grad = torch.zeros_like(g)  # the solver's history: not to be zeroed
            else:
                g.zero_()
        self.__dict__["_dropped_diffs"] = dropped

    def _restore_dropped_diffs(self) -> None:
        """The diffs clear_param_diffs let go that no gradient reached since: zeros again,
        in their old memory (as if they had been zeroed)."""
        dropped = self.__dict__.pop("_dropped_diffs", None)
        if dropped:
            for p, g in dropped:
                if p.grad is None:
                    if getattr(g, "_decaffe_history", False):
                        p.grad = torch.zeros_like(g)  # the solver's history stays as it is
                    else:
                        g.zero_()
                        p.grad = g

    # -- pycaffe: attributes ----------------------------------------------------------------
    @property
    def blobs(self) -> collections.OrderedDict:
        return collections.OrderedDict(zip(self._blob_names, self._blob_list))

    @property
    def _blobs(self) -> list[Blob]:
        return list(self._blob_list)

    @property
    def params(self) -> collections.OrderedDict:
        return collections.OrderedDict(
            (rec.name, list(rec.params)) for rec in self._records if rec.params)

    @property
    def layer_records(self) -> tuple[LayerRecord, ...]:
        """The built layers in order, one read-only LayerRecord each (layer, bottoms, tops,
        parameters, loss weights, backward flags): what other modules read of a net's
        wiring."""
        return self._records

    @property
    def _layer_names(self) -> list[str]:
        """pycaffe's Net._layer_names: the layers' names in order."""
        return [rec.name for rec in self._records]

    @property
    def layers(self) -> list:
        """pycaffe's Net.layers: for a Python layer the user's own ``caffe.Layer`` object (its
        methods and attributes, as boost.python hands back the object the net created), for
        any other layer a LayerView (type, blobs, setup, reshape); the same objects on every
        call."""
        views = self.__dict__.get("_layer_views")
        if views is None or len(views) != len(self._records):
            views = [rec.layer.user if rec.type == "Python" and getattr(rec.layer, "user", None)
                     is not None else LayerView(self, rec.index) for rec in self._records]
            self.__dict__["_layer_views"] = views
        return list(views)

    @property
    def layer_dict(self) -> collections.OrderedDict:
        return collections.OrderedDict(zip(self._layer_names, self.layers))

    @property
    def inputs(self) -> list[str]:
        return [self._blob_names[i] for i in self._input_ids]

    @property
    def outputs(self) -> list[str]:
        return [self._blob_names[i] for i in self._output_ids]

    @property
    def _inputs(self) -> list[int]:
        return list(self._input_ids)

    @property
    def _outputs(self) -> list[int]:
        return list(self._output_ids)

    @property
    def _blob_loss_weights(self) -> list[float]:
        return list(self._blob_loss_weight)

    @property
    def blob_loss_weights(self) -> collections.OrderedDict:
        return collections.OrderedDict(zip(self._blob_names, self._blob_loss_weight))

    @property
    def top_names(self) -> collections.OrderedDict:
        return collections.OrderedDict((rec.name, list(rec.top_names)) for rec in self._records)

    @property
    def bottom_names(self) -> collections.OrderedDict:
        return collections.OrderedDict((rec.name, list(rec.bottom_names))
                                       for rec in self._records)

    def layer_need_backward(self, i: int) -> bool:
        return self._records[i].need_backward

    def bottom_need_backward(self, i: int) -> list[bool]:
        return list(self._records[i].bottom_need_backward)

    def learnable_param_id(self, layer_index: int, blob_index: int) -> int:
        """Index into learnable_params of a layer's blob (its owner's, when shared)."""
        return self._records[layer_index].param_ids[blob_index]

    def _bottom_ids(self, i: int) -> list[int]:
        """pycaffe's Net._bottom_ids(i): indices into _blobs of layer i's bottoms."""
        return list(self._records[i].bottoms)

    def _top_ids(self, i: int) -> list[int]:
        """pycaffe's Net._top_ids(i): indices into _blobs of layer i's tops."""
        return list(self._records[i].tops)

    def _add_callback(self, when: str, fn: LayerCallback) -> None:
        # pycaffe takes a callable, or an object with run(layer) (Net::Callback, e.g. NCCL)
        run = fn if callable(fn) else getattr(fn, "run", None)
        if not callable(run):
            raise DecaffeError(f"Net.{when}: {fn!r} is neither callable nor has run(layer)")
        self._callbacks[when].append(run)

    def before_forward(self, fn: LayerCallback) -> None:
        """Call fn(layer_index) before each layer's forward (pycaffe); fn may also be an
        object with a run(layer_index) method."""
        self._add_callback("before_forward", fn)

    def after_forward(self, fn: LayerCallback) -> None:
        """Call fn(layer_index) after each layer's forward (pycaffe)."""
        self._add_callback("after_forward", fn)

    def before_backward(self, fn: LayerCallback) -> None:
        """Call fn(layer_index) before each layer's backward (pycaffe). On the solver's path,
        where one autograd pass computes every layer, the backward callbacks run after it,
        last layer first."""
        self._add_callback("before_backward", fn)

    def after_backward(self, fn: LayerCallback) -> None:
        """Call fn(layer_index) after each layer's backward (pycaffe; see before_backward);
        pycaffe's train.py passes its NCCL object here."""
        self._add_callback("after_backward", fn)

    # -- weights ------------------------------------------------------------------------------
    def copy_from(self, path: str) -> None:
        """Load weights by layer name from a .caffemodel or .caffemodel.h5 (Caffe's
        CopyTrainedLayersFrom)."""
        self.copy_from_layers(wfmt.load_weights(path), source=path,
                              first_of_name=not os.fspath(path).endswith(".h5"))

    def copy_from_layers(self,
                         layers: Iterable[tuple[str, Sequence[wfmt.BlobRecord | np.ndarray
                                                              | None]]],
                         source: str = "<weights>",
                         first_of_name: bool = True) -> None:
        """Copy from [(layer name, [BlobRecord or array, ...]), ...] (Caffe's
        CopyTrainedLayersFrom): a layer the net lacks is skipped and logged at INFO as
        "Ignoring source layer NAME", as Caffe logs it; a blob count or shape that differs
        raises NetError naming the layer. Where several layers share a name, a binary
        caffemodel fills the first (Caffe searches from the start), HDF5 the last (Caffe's
        name index): first_of_name chooses."""
        names = list(enumerate(self._layer_names))
        index = {n: i for i, n in (reversed(names) if first_of_name else names)}
        for name, records in layers:
            li = index.get(name)
            if li is None:
                log.info(f"Ignoring source layer {name}")
                continue
            targets = self._layers[li].blob_params
            if len(targets) != len(records):
                raise NetError(f"{source} has {len(records)} blobs for this layer, the net "
                               f"has {len(targets)}", layer=name)
            for k, (p, rec) in enumerate(zip(targets, records)):
                if rec is None:  # Caffe's HDF5 weights omit blobs shared with another layer
                    continue
                arr = getattr(rec, "array", rec)
                legacy = getattr(rec, "legacy", False)
                if not shapes_match(tuple(p.shape), arr.shape, legacy):
                    raise NetError(f"cannot copy blob {k} from {source}: its shape is "
                                   f"{tuple(arr.shape)}, the net's is {tuple(p.shape)}",
                                   layer=name)
                with torch.no_grad():
                    p.data.copy_(torch.from_numpy(np.ascontiguousarray(arr)).reshape(p.shape))
        for rec in self._records:
            for b in rec.params:
                b._dirty = {"data": False, "diff": False}

    def share_with(self, other: Net) -> None:
        """Use other's parameter blobs for layers of the same name (Caffe's
        ShareTrainedLayersWith)."""
        index = {rec.name: rec.index for rec in self._records}
        records = list(self._records)
        for orec in other.layer_records:
            name = orec.name
            li = index.get(name)
            if li is None:
                continue
            src = orec.layer.blob_params
            dst = records[li].layer.blob_params
            if len(src) != len(dst):
                raise NetError(f"cannot share: {len(src)} blobs in the source layer, "
                               f"{len(dst)} here", layer=name)
            for k in range(len(dst)):
                if src[k].shape != dst[k].shape:
                    raise NetError(f"cannot share blob {k}: shapes {tuple(src[k].shape)} and "
                                   f"{tuple(dst[k].shape)} differ", layer=name)
                old = dst[k]
                dst[k] = src[k]
                self._replace_param(old, src[k])
            records[li] = dataclasses.replace(records[li], params=tuple(
                ParamBlob(p, name=f"{name}/{k}", owner=self) for k, p in enumerate(dst)))
        self._records = tuple(records)

    def _replace_param(self, old: torch.nn.Parameter, new: torch.nn.Parameter) -> None:
        for i, p in enumerate(self.learnable_params):
            if p is old:
                self.learnable_params[i] = new
        for layer in self._layers:
            for k, p in enumerate(layer.blob_params):
                if p is old:
                    layer.blob_params[k] = new

    def to_proto(self, write_diff: bool = False) -> tuple[caffe_pb2.NetParameter, dict, dict]:
        """(NetParameter of the layers as built, {layer index: [arrays]}, diffs or None)."""
        data, diffs = {}, ({} if write_diff else None)
        for li, layer in enumerate(self._layers):
            if layer.num_blobs:
                data[li] = [p.detach().cpu().numpy() for p in layer.blob_params]
                if write_diff:
                    diffs[li] = [(p.grad if p.grad is not None else torch.zeros_like(p))
                                 .detach().cpu().numpy() for p in layer.blob_params]
        param = caffe_pb2.NetParameter()
        param.name = self.name
        for layer in self._layers:
            param.layer.add().CopyFrom(layer.lp)
        return param, data, diffs

    def save(self, path: str, write_diff: bool = False) -> None:
        """Write a .caffemodel as Caffe's Net::ToProto would (to a temporary file, then
        renamed into place)."""
        param, data, diffs = self.to_proto(write_diff)
        wfmt.save_caffemodel(path, param, data, diffs)

    def save_hdf5(self, path: str, write_diff: bool = False) -> None:
        _, data, diffs = self.to_proto(write_diff)
        names = self._layer_names
        wfmt.save_hdf5(path, [(names[li], arrs) for li, arrs in data.items()],
                       None if diffs is None else
                       [(names[li], arrs) for li, arrs in diffs.items()])

    def load_hdf5(self, path: str) -> None:
        self.copy_from_layers(wfmt.load_hdf5(path), source=path, first_of_name=False)

    def __repr__(self) -> str:
        return f"<decaffe.Net {self.name!r}: {len(self._layers)} layers, phase " \
               f"{'TRAIN' if self.phase == TRAIN else 'TEST'}>"
