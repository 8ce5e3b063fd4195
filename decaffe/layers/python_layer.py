"""Python layers: `type: "Python"` runs a layer written against pycaffe's ``caffe.Layer``.

``python_param { module layer param_str share_in_parallel }`` names a module importable
from ``sys.path`` and a class in it deriving from :class:`Layer` (exported as
``caffe.Layer``). As in Caffe's PythonLayer:

- the class is instantiated with the LayerParameter; ``param_str`` and ``phase``
  (0 TRAIN, 1 TEST) are set on the object before ``setup(bottom, top)``;
- ``reshape(bottom, top)`` runs after setup, whenever the net reshapes, and before every
  ``forward(bottom, top)`` (Caffe's Layer::Forward reshapes first);
- ``backward(top, propagate_down, bottom)`` gets one bool per bottom saying whether that
  bottom's diff is wanted;
- bottoms and tops are :class:`decaffe.blob.Blob` objects whose ``data``/``diff`` numpy arrays
  the layer reads and writes; top blobs keep their shapes from call to call;
- ``self.blobs.add_blob(*shape)`` (in setup) adds a learnable blob: it becomes one of the
  decaffe layer's parameters, so ``net.params`` shows it and solvers train it; the layer's
  backward writes its diff (Caffe's convention: parameter diffs accumulate until the
  solver clears them, so ``+=`` accumulates and ``=`` overwrites);
- ``share_in_parallel`` is accepted and has no effect (as in Caffe 1.0).

On a GPU the user's code sees host copies: bottoms are downloaded, tops and diffs uploaded
after the call. An exception raised by the user's code reaches the caller as itself (its own
type, as pycaffe lets it through), with a note naming the layer and the method; a module or
class that cannot be loaded is a :class:`PythonLayerError` naming the layer and field.
"""

from __future__ import annotations

import importlib
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.autograd.function import FunctionCtx

from ..blob import Blob, ParamBlob
from ..errors import NetError, suggest
from ..layer import Layer as _TorchLayer
from ..layer import Shape, Tops, register

if TYPE_CHECKING:
    from ..proto import caffe_pb2


class PythonLayerError(NetError):
    """An error about a Python layer's set-up (its module or class); names the layer. What the
    user's own code raises reaches the caller as itself (see note_exception)."""


# set on an exception raised by a Python layer's code: the layer's name (the net lets it pass)
USER_ERROR = "_decaffe_python_layer"


def note_exception(e: BaseException, note: str) -> None:
    """Add a note to e (``BaseException.add_note``, Python >= 3.11; on 3.10 the same
    ``__notes__`` list, which tools such as pytest and the exceptiongroup backport print)."""
    if hasattr(e, "add_note"):
        e.add_note(note)
    else:  # Python 3.10
        notes = getattr(e, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
        notes.append(note)
        e.__notes__ = notes


class BlobVec:
    """pycaffe's ``layer.blobs``: the learnable blobs of a Python layer, in order.

    Indexing gives Blobs whose data/diff are the decaffe parameter and its gradient; a
    parameter replaced by the net (sharing by name) is followed.
    """

    def __init__(self, owner: Layer) -> None:
        self._owner = owner
        self._params: list[torch.nn.Parameter] = []  # until the decaffe layer adopts them
        self._views: list[ParamBlob] = []

    def _param_list(self) -> Sequence[torch.nn.Parameter]:
        engine = self._owner._decaffe_layer
        return engine.blob_params if engine is not None else self._params

    def add_blob(self, *shape: int | Sequence[int]) -> None:
        """Append a zero-filled learnable blob of this shape (pycaffe's ``blobs.add_blob``)."""
        if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
            shape = tuple(shape[0])
        try:
            dims = tuple(operator.index(s) for s in shape)
        except TypeError:
            raise TypeError(f"add_blob takes integer dimensions, not {shape!r}") from None
        if any(d < 0 for d in dims):
            raise ValueError(f"add_blob: negative dimension in {dims}")
        engine = self._owner._decaffe_layer
        if engine is None:  # a layer object used outside any net
            self._params.append(torch.nn.Parameter(torch.zeros(dims)))
            return
        like = engine._probe
        engine.add_blob(torch.zeros(dims, dtype=like.dtype, device=like.device))

    def __len__(self) -> int:
        return len(self._param_list())

    def __getitem__(self, i: int | slice) -> ParamBlob | list[ParamBlob]:
        params = self._param_list()
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(params)))]
        p = params[i]
        i = i % len(params)
        while len(self._views) <= i:
            self._views.append(None)
        view = self._views[i]
        if view is None or view.param is not p:
            view = ParamBlob(p, name=f"{self._owner._name}/{i}")
            self._views[i] = view
        return view

    def __iter__(self) -> Iterator[ParamBlob]:
        return (self[i] for i in range(len(self)))

    def _push(self) -> None:
        # upload host writes (GPU); a no-op for CPU tensors, which the arrays share
        for view in self._views:
            if view is not None and view.param.device.type != "cpu":
                view.push()

    def __repr__(self) -> str:
        return f"<BlobVec of {len(self)} blobs>"


class Layer:
    """pycaffe's ``caffe.Layer``: the base class of layers written in Python.

    Override ``setup(bottom, top)``, ``reshape(bottom, top)``, ``forward(bottom, top)`` and
    ``backward(top, propagate_down, bottom)``. Attributes set by the framework:
    ``param_str`` (python_param.param_str), ``phase`` (0 TRAIN, 1 TEST), ``blobs``
    (learnable blobs; add with ``self.blobs.add_blob(*shape)``) and ``type`` ("Python").
    """

    def __init__(self, param: caffe_pb2.LayerParameter | None = None) -> None:
        self._init_base(param)

    def _init_base(self, param: caffe_pb2.LayerParameter | None) -> None:
        d = self.__dict__
        d.setdefault("_layer_param", param)
        d.setdefault("_decaffe_layer", None)
        d.setdefault("_name", getattr(param, "name", "") if param is not None else "")
        d.setdefault("_blobs", BlobVec(self))
        d.setdefault("param_str", "")
        d.setdefault("phase", 0)

    @property
    def blobs(self) -> BlobVec:
        if "_blobs" not in self.__dict__:  # a subclass __init__ that skipped ours
            self._init_base(None)
        return self.__dict__["_blobs"]

    @property
    def type(self) -> str:
        return "Python"

    def setup(self, bottom: list[Blob], top: list[Blob]) -> None:
        """Read param_str, check bottoms, shape tops, add blobs. Default: nothing."""

    def reshape(self, bottom: list[Blob], top: list[Blob]) -> None:
        """Shape the tops for these bottoms. Default: nothing (tops keep their shapes)."""

    def forward(self, bottom: list[Blob], top: list[Blob]) -> None:
        raise NotImplementedError(f"{type(self).__name__} defines no forward(bottom, top)")

    def backward(self, top: list[Blob], propagate_down: list[bool], bottom: list[Blob]) -> None:
        raise NotImplementedError(f"{type(self).__name__} defines no "
                                  "backward(top, propagate_down, bottom)")


class _PythonFunction(torch.autograd.Function):
    """Runs the user's forward; its backward calls the user's backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, engine: PythonLayer, n_bottoms: int,
                *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        bottoms = inputs[:n_bottoms]
        outs, host_bottoms, host_tops = engine._run_forward(bottoms)
        ctx.engine = engine
        ctx.n_bottoms = n_bottoms
        ctx.devices = [b.device for b in bottoms]
        # saved through autograd (no reference cycle); on the CPU host_tops are the outputs
        ctx.save_for_backward(*host_bottoms, *host_tops)
        return outs

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        n = ctx.n_bottoms
        saved = ctx.saved_tensors
        need = list(ctx.needs_input_grad[2: 2 + n])
        got = ctx.engine._run_backward(saved[:n], saved[n:], grads, need)
        out: list[torch.Tensor | None] = [None, None]
        for j in range(n):
            out.append(got[j].to(ctx.devices[j]) if need[j] else None)
        # parameter diffs were written by the user's code itself (Caffe's semantics)
        out.extend([None] * (len(ctx.needs_input_grad) - 2 - n))
        return tuple(out)


@register("Python")
class PythonLayer(_TorchLayer):
    """A layer whose setup/reshape/forward/backward are the user's pycaffe-style Python code.

    Bottoms: any number, of any shapes the user's code accepts; each gets the diff the user's
        backward writes where propagate_down asks for it.
    Tops: any number, shaped by the user's reshape (or setup); they keep their shapes from call
        to call.
    Blobs: those the user's code adds with ``self.blobs.add_blob(*shape)`` (zero-filled), in
        order; the user's backward writes their diffs.
    Params: python_param.module and layer (both required), param_str (default ""),
        share_in_parallel (default false; no effect, as in Caffe 1.0).
    Source: include/caffe/layers/python_layer.hpp (and python/caffe/_caffe.cpp's Layer).

    The module docstring describes the calls the user's class gets and what it sees.
    """

    # the user's backward may read the tops' data as well as the bottoms'
    backward_reads = "tops"

    def __init__(self, lp: caffe_pb2.LayerParameter, phase: int) -> None:
        super().__init__(lp, phase)
        self.user: Layer | None = None
        self._top_blobs: list[Blob] = []
        # follows the net's dtype and device (the layer is cast with .to())
        self.register_buffer("_probe", torch.zeros(0), persistent=False)

    # -- loading the user's class ---------------------------------------------------------------
    def _load_class(self) -> type:
        p = self.lp.python_param
        self.check(bool(p.module), "the module to import must be given", "python_param.module")
        self.check(bool(p.layer), "the layer class must be given", "python_param.layer")
        try:
            module = importlib.import_module(p.module)
        except Exception as e:
            raise self._error(f"python_param.module: cannot import module '{p.module}': "
                              f"{type(e).__name__}: {e}") from e
        cls = getattr(module, p.layer, None)
        if cls is None:
            names = [n for n in dir(module) if not n.startswith("_")]
            raise self._error(f"python_param.layer: module '{p.module}' has no class "
                              f"'{p.layer}'{suggest(p.layer, names)}")
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise self._error(f"python_param.layer: '{p.module}.{p.layer}' is not a class "
                              "deriving from caffe.Layer")
        return cls

    def _error(self, message: str) -> PythonLayerError:
        return PythonLayerError(message, layer=self.name)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run user code; an exception it raises goes on as itself (pycaffe lets the user's
        exception through), with a note naming this layer."""
        try:
            return fn(*args)
        except Exception as e:
            if not hasattr(e, USER_ERROR):
                p = self.lp.python_param
                note_exception(e, f"raised in {what} of Python layer '{self.name}' "
                                  f"({p.module}.{p.layer})")
                setattr(e, USER_ERROR, self.name)
            raise

    # -- blobs handed to the user -------------------------------------------------------------
    def _in_place(self, j: int) -> bool:
        return (j < len(self.top_names) and j < len(self.bottom_names)
                and self.top_names[j] == self.bottom_names[j])

    def _bottom_name(self, j: int) -> str:
        return self.bottom_names[j] if j < len(self.bottom_names) else f"bottom{j}"

    def _fresh_tops(self) -> list[Blob]:
        """Top blobs with the shapes the user gave last time and fresh (zero) storage."""
        dtype = self._probe.dtype
        self._top_blobs = [Blob(t.shape, name=t.name, dtype=dtype) for t in self._top_blobs]
        return self._top_blobs

    def _with_bottoms(self, bottoms: list[Blob]) -> tuple[list[Blob], list[Blob]]:
        # an in-place top is the same blob as its bottom, as in Caffe
        tops = list(self._top_blobs)
        for j, b in enumerate(bottoms):
            if self._in_place(j):
                tops[j] = b
        self._top_blobs = tops
        return list(bottoms), list(tops)

    def _shape_blobs(self, bottom_shapes: list[Shape]) -> tuple[list[Blob], list[Blob]]:
        """Bottoms of these shapes (zero data, as Caffe's fresh blobs hold) for set-up/reshape."""
        dtype = self._probe.dtype
        bottoms = [Blob(s, name=self._bottom_name(j), dtype=dtype)
                   for j, s in enumerate(bottom_shapes)]
        return self._with_bottoms(bottoms)

    # -- set-up and shapes ----------------------------------------------------------------------
    def setup(self, bottom_shapes: list[Shape]) -> None:
        if self.user is None:
            cls = self._load_class()
            p = self.lp.python_param
            user = self._call("__init__", cls, self.lp)
            user._init_base(self.lp)  # tolerate a subclass __init__ that skipped ours
            user.__dict__["_name"] = self.name
            user.__dict__["_decaffe_layer"] = self
            # blobs added before the layer joined a net (in __init__) are adopted in order
            for param in user.blobs._params:
                self.blob_params.append(param)
            user.blobs._params = []
            user.param_str = p.param_str
            user.phase = int(self.phase)
            self.user = user
            self._top_blobs = [Blob((), name=n, dtype=self._probe.dtype) for n in self.top_names]
        bottoms, tops = self._shape_blobs(bottom_shapes)
        self._call("setup", self.user.setup, bottoms, tops)
        self.user.blobs._push()

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        bottoms, tops = self._shape_blobs(bottom_shapes)
        self._call("reshape", self.user.reshape, bottoms, tops)
        self.user.blobs._push()
        return [tuple(t.shape) for t in self._top_blobs]

    # -- running ----------------------------------------------------------------------------
    @staticmethod
    def _host(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        return t if t.device.type == "cpu" else t.cpu()

    def _run_forward(self, bottoms: Sequence[torch.Tensor]) -> tuple[
            tuple[torch.Tensor, ...], list[torch.Tensor], list[torch.Tensor]]:
        """Reshape, then forward, through the user's code.

        Returns (tops on the bottoms' device, host bottoms, host tops)."""
        device = bottoms[0].device if bottoms else self._probe.device
        host_bottoms = [self._host(b) for b in bottoms]
        self._fresh_tops()
        blobs = []
        for j, hb in enumerate(host_bottoms):
            blob = Blob(hb.shape, name=self._bottom_name(j), dtype=hb.dtype)
            # in place: the shared blob starts as a copy, so the bottom tensor stays untouched
            blob.bind(hb.clone() if self._in_place(j) else hb, owned=True)
            blobs.append(blob)
        bottom, top = self._with_bottoms(blobs)
        self._call("reshape", self.user.reshape, bottom, top)
        self._call("forward", self.user.forward, bottom, top)
        self.user.blobs._push()
        host_tops = [t.tensor("data") for t in self._top_blobs]
        outs = tuple(t.to(device) if t.device != device else t for t in host_tops)
        return outs, host_bottoms, host_tops

    def _run_backward(self, host_bottoms: Sequence[torch.Tensor],
                      host_tops: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                      need: Sequence[bool]) -> list[torch.Tensor]:
        """The user's backward on blobs holding the pass's data and the tops' diffs."""
        bottoms, tops = [], []
        for j, hb in enumerate(host_bottoms):
            blob = Blob(hb.shape, name=self._bottom_name(j), dtype=hb.dtype)
            if self._in_place(j):
                # one blob, as in Caffe: the top's data, its diff read as top and written as bottom
                blob.bind(host_tops[j], owned=True)
                blob._set("diff", self._host(grads[j]).reshape(hb.shape).clone(), owned=True)
            else:
                blob.bind(hb, owned=True)
            bottoms.append(blob)
        for j, (ht, g) in enumerate(zip(host_tops, grads)):
            if self._in_place(j):
                tops.append(bottoms[j])
                continue
            blob = Blob(ht.shape, name=self.top_names[j], dtype=ht.dtype)
            blob.bind(ht, owned=True)
            # a copy: the user's code must not write into autograd's gradient buffers
            blob._set("diff", self._host(g).reshape(ht.shape).clone(), owned=True)
            tops.append(blob)
        self._call("backward", self.user.backward, tops, list(need), bottoms)
        self.user.blobs._push()
        diffs = []
        for j, (b, hb) in enumerate(zip(bottoms, host_bottoms)):
            if need[j] and tuple(b.shape) != tuple(hb.shape):
                raise self._error(f"backward reshaped bottom[{j}] to {b.shape}; it must keep "
                                  f"the shape {tuple(hb.shape)}")
            diffs.append(b.tensor("diff").to(hb.dtype))
        return diffs

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor], need: list[bool]) -> list:
        """The user's backward on blobs holding the net's blobs' current data and diffs (as
        Caffe's PythonLayer hands its backward the net's own blobs)."""
        host = self._host
        got = self._run_backward([host(b) for b in bottoms], [host(t) for t in tops],
                                 top_diffs, need)
        return [g.to(b.device) if n else None for g, b, n in zip(got, bottoms, need)]

    def forward(self, *bottoms: torch.Tensor) -> Tops:
        params = list(self.blob_params)
        grad = torch.is_grad_enabled() and (any(b.requires_grad for b in bottoms)
                                            or any(p.requires_grad for p in params))
        if grad and self.top_names:
            return _PythonFunction.apply(self, len(bottoms), *bottoms, *params)
        outs, _, _ = self._run_forward(bottoms)
        return outs
