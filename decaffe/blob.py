"""Blob: pycaffe's view of a tensor, with `data` and `diff` as writable numpy arrays.

On the CPU the arrays share memory with the tensors, so writing
`blob.data[...] = x` changes what the next forward reads, with no copy.
An array, once handed out, stays the blob's memory, as in pycaffe: the
engine's later outputs (forward) and gradients (backward) of the same shape
are copied into it, so an array taken before ``net.forward()`` shows the new
values after it. Until an array is handed out the blob just holds the
engine's tensors (no copy: the solver's passes keep their speed).
On a GPU the arrays are host copies, synchronised as Caffe's SyncedMemory
does: reading gives the device's latest values (into the same host array);
writing marks the host copy as the newest, and the net uploads it before its
next pass.
"""

from __future__ import annotations

import operator
import os
import resource
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, SupportsIndex

import numpy as np
import numpy.typing as npt
import torch

from .errors import DecaffeError

INT_MAX = 2**31 - 1  # Caffe's Blob::Reshape limit on a blob's element count
_CHECK_MEMORY_FROM = 1 << 24  # bytes; smaller blobs are not worth a look at free memory


class BlobOwner(Protocol):
    """What a blob needs of the net that owns it (decaffe.net.Net, which imports this
    module): the blobs whose host arrays were written, and a way to upload them."""

    _dirty_blobs: set[Blob]

    def _push_host_writes(self) -> None: ...


def check_shape(shape: Sequence[SupportsIndex], what: str) -> tuple[int, ...]:
    """shape as a tuple of ints, refused (DecaffeError naming `what` and the dimension) when a
    dimension is not an integer or is negative, or the element count passes INT_MAX, as
    Caffe's Blob::Reshape checks."""
    dims = []
    for i, d in enumerate(shape):
        if isinstance(d, bool):
            d = int(d)
        try:
            v = operator.index(d)
        except TypeError:
            raise DecaffeError(f"{what}: dimension {i} of {tuple(shape)} is {d!r}, not an "
                               "integer") from None
        if v < 0:
            raise DecaffeError(f"{what}: negative dimension in {tuple(shape)} "
                               f"(dimension {i} is {v})")
        dims.append(v)
    count = 1
    for i, v in enumerate(dims):
        if v == 0:
            break
        count *= v
        if count > INT_MAX:
            raise DecaffeError(f"{what}: shape {tuple(dims)} has more than INT_MAX ({INT_MAX}) "
                               f"elements, Caffe's limit for a blob (passed at dimension {i})")
    return tuple(dims)


def free_memory(device: torch.device | str | None = None) -> int:
    """Bytes that can still be allocated on device: CUDA's free memory; on the CPU the
    system's available memory, less what the address-space limit (RLIMIT_AS) leaves."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            avail = 1 << 62
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            used = 0
        avail = min(avail, max(0, limit - used))
    return avail


def check_memory(shape: Sequence[int], itemsize: int, device: torch.device | str | None,
                 what: str) -> None:
    """Refuse (DecaffeError naming `what` and the shape) a blob whose bytes pass the free
    memory of the device, before anything is allocated."""
    count = 1
    for v in shape:
        count *= int(v)
    need = count * int(itemsize)
    if need < _CHECK_MEMORY_FROM:
        return
    free = free_memory(device)
    if need > free:
        raise DecaffeError(f"{what}: shape {tuple(shape)} needs {need / 2**20:.1f} MiB, more "
                           f"than the {free / 2**20:.1f} MiB free on {device or 'cpu'}")


class Blob:
    """A named N-d array with a diff of the same shape (Caffe's Blob)."""

    def __init__(self, shape: Sequence[int] = (), *, name: str = "", owner: BlobOwner | None = None,
                 device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> None:
        self.name = name
        self._shape = tuple(int(s) for s in shape)
        self._owner = owner  # the Net whose pass must upload host writes
        self._device = device or torch.device("cpu")
        self._dtype = dtype
        self._t: torch.Tensor | None = None
        self._g: torch.Tensor | None = None
        self._host = {"data": None, "diff": None}
        self._dirty = {"data": False, "diff": False}
        # owned: the tensor is memory the blob made (not an engine tensor it was bound to);
        # out: an array over that memory was handed out, so later values are copied into it
        self._owned = {"data": False, "diff": False}
        self._out = {"data": False, "diff": False}
        self._src: torch.Tensor | None = None  # the engine tensor the data array was copied from
        # a compiled pass left this blob's data unmade: called to make it when first read
        self._lazy: Callable[[], None] | None = None

    # -- tensors, for the engine -------------------------------------------------------
    def _get(self, which: str) -> torch.Tensor | None:
        return self._t if which == "data" else self._g

    def _set(self, which: str, t: torch.Tensor | None, owned: bool = False) -> None:
        if which == "data":
            self._t = t
        else:
            self._g = t
        self._owned[which] = owned and t is not None
        self._out[which] = False

    def tensor(self, which: str = "data") -> torch.Tensor:
        """The device tensor behind data or diff (allocated as zeros when first needed)."""
        if self._lazy is not None and which == "data":
            self._lazy()
        t = self._get(which)
        if t is None or tuple(t.shape) != self._shape:
            t = torch.zeros(self._shape, device=self._device, dtype=self._dtype)
            t._decaffe_home = True
            self._set(which, t, owned=True)
        return t

    @property
    def handed_out(self) -> bool:
        """Whether an array of this blob's data is held outside (later outputs are copied
        into it rather than rebinding the blob)."""
        return self._out["data"]

    def _keep(self, which: str, t: torch.Tensor) -> bool:
        """Copy t into the handed-out memory of `which` if there is one of t's shape."""
        if not self._out[which]:
            return False
        home = self._get(which)
        if home is None or home.shape != t.shape or home.dtype != t.dtype \
                or home.device != t.device:
            return False
        if home.data_ptr() != t.data_ptr() or home.stride() != t.stride():
            with torch.no_grad():
                if which == "data" and t is self._src and not t.requires_grad \
                        and not getattr(t, "_decaffe_home", False):
                    # the layer handed back the tensor it keeps (DummyData's constant tops):
                    # writes into the array reach it, as into Caffe's never-refilled blob
                    t.copy_(home)
                else:
                    home.copy_(t)
        self._dirty[which] = False
        return True

    def bind(self, t: torch.Tensor, owned: bool = False) -> None:
        """Make t the blob's data (a layer's fresh output): copied into the array handed out,
        if any, else bound as it is (owned: t is memory nothing else uses)."""
        self._lazy = None
        if self._keep("data", t):
            return
        self._set("data", t, owned)
        self._shape = tuple(t.shape)
        self._dirty["data"] = False

    def set_diff(self, t: torch.Tensor, owned: bool = False) -> None:
        """Make t the blob's diff (a gradient the engine computed), copied into the array
        handed out, if any."""
        if tuple(t.shape) != self._shape:
            t = t.reshape(self._shape)
        if self._keep("diff", t):
            return
        self._set("diff", t, owned)
        self._dirty["diff"] = False

    def push(self) -> None:
        """Upload host writes to the device (called by the net before a pass)."""
        for which in ("data", "diff"):
            if self._dirty[which]:
                host = self._host[which]
                t = self.tensor(which)
                new = torch.from_numpy(host).reshape(t.shape)
                if which == "data" and type(self) is Blob:
                    # fresh memory, not a write into the tensor a recorded graph may hold
                    # (backward compares the two to find what was written since the forward)
                    self._set("data", new.to(t.device, t.dtype, copy=True), owned=True)
                else:
                    with torch.no_grad():
                        t.copy_(new)
                self._dirty[which] = False

    def _array(self, which: str) -> np.ndarray:
        if self._dirty[which]:
            return self._host[which]
        t = self.tensor(which)
        if t.dtype in (torch.bfloat16, torch.float16):
            # a bf16/fp16 activation (decaffe.precision): pycaffe sees a float32 copy
            return t.detach().float().cpu().numpy()
        if t.device.type == "cpu":
            if not self._out[which]:
                if not self._owned[which]:
                    # an engine tensor (maybe in autograd's graph): the array gets memory of
                    # its own, which later passes write into
                    src, t = t, t.detach().clone()
                    t._decaffe_home = True
                    self._set(which, t, owned=True)
                    if which == "data":
                        self._src = src
                self._out[which] = True
            return t.detach().numpy()
        host = self._host[which]
        if host is not None and host.shape == tuple(t.shape) and host.dtype == np.float32 \
                and t.dtype == torch.float32:
            host[...] = t.detach().cpu().numpy()  # the same host memory, as SyncedMemory
        else:
            host = t.detach().cpu().numpy()
            self._host[which] = host
        self._dirty[which] = True
        if self._owner is not None:
            self._owner._dirty_blobs.add(self)
        return host

    def _assign(self, which: str, value: npt.ArrayLike) -> None:
        arr = self._array(which)
        arr[...] = value

    # -- pycaffe's interface -------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        return self._array("data")

    @data.setter
    def data(self, value: npt.ArrayLike) -> None:
        self._assign("data", value)

    @property
    def diff(self) -> np.ndarray:
        return self._array("diff")

    @diff.setter
    def diff(self, value: npt.ArrayLike) -> None:
        self._assign("diff", value)

    def _gpu_ptr(self, which: str) -> int:
        if self._device.type != "cuda":
            raise DecaffeError(f"blob '{self.name}': no GPU memory; the net runs on the CPU "
                               "(caffe.set_mode_gpu() and a pass move it)")
        if self._owner is not None:
            self._owner._push_host_writes()
        else:
            self.push()
        return self.tensor(which).data_ptr()

    @property
    def _gpu_data_ptr(self) -> int:
        """The device address of data (pycaffe's GPU builds; for PyCUDA and the like)."""
        return self._gpu_ptr("data")

    @property
    def _gpu_diff_ptr(self) -> int:
        """The device address of diff (pycaffe's GPU builds)."""
        return self._gpu_ptr("diff")

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def count(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64)) if self._shape else 1

    def _legacy(self, i: int) -> int:
        if len(self._shape) > 4:
            raise DecaffeError(f"blob '{self.name}': legacy accessors need at most 4 axes, "
                               f"shape is {self._shape}")
        return self._shape[i] if i < len(self._shape) else 1

    @property
    def num(self) -> int:
        return self._legacy(0)

    @property
    def channels(self) -> int:
        return self._legacy(1)

    @property
    def height(self) -> int:
        return self._legacy(2)

    @property
    def width(self) -> int:
        return self._legacy(3)

    def reshape(self, *shape: SupportsIndex | Sequence[SupportsIndex]) -> None:
        """Change the blob's shape; contents are kept only when the shape is unchanged.
        Dimensions must be non-negative integers with at most INT_MAX elements in all, and
        the blob must fit in the device's free memory (DecaffeError naming the blob)."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        shape = check_shape(shape, f"blob '{self.name}'")
        if shape != self._shape:
            check_memory(shape, torch.finfo(self._dtype).bits // 8, self._device,
                         f"blob '{self.name}'")
            self._shape = shape
            for which in ("data", "diff"):
                self._set(which, None)
                self._host[which] = None
                self._dirty[which] = False

    def to(self, device: torch.device) -> None:
        """Move the blob's tensors to another device (after set_mode_gpu/cpu)."""
        self.push()
        self._device = device
        for which in ("data", "diff"):
            t = self._get(which)
            if t is not None and t.device != device:
                self._set(which, t.detach().to(device), owned=True)
            self._host[which] = None

    def __repr__(self) -> str:
        return f"<Blob {self.name!r} shape={self._shape}>"


def diff_is_private(p: torch.nn.Parameter, g: torch.Tensor) -> bool:
    """Whether p's diff g is memory only the engine sees: p gets gradients, g is not a view
    into a bucket (NCCL's), and no array or device pointer of it was handed out (ParamBlob
    marks the parameter when one is). Such a diff may be let go rather than zeroed, and may
    be the solver's history tensor itself after an update."""
    return p.requires_grad and g._base is None and not getattr(p, "_decaffe_diff_out", False)


def own_diff(p: torch.nn.Parameter) -> None:
    """Give p a diff of its own memory where its diff is the solver's history tensor (an SGD
    update leaves it so rather than copying): before anything writes into the diff."""
    g = p.grad
    if g is not None and getattr(g, "_decaffe_history", False):
        p.grad = g.clone()


def own_diffs(params: Iterable[torch.nn.Parameter]) -> None:
    """own_diff for each parameter: before a pass or an update adds into their diffs, or a
    restore writes them."""
    for p in params:
        own_diff(p)


class ParamBlob(Blob):
    """A layer's parameter blob: data is the torch Parameter, diff its .grad.

    Caffe accumulates parameter diffs across backward passes until the solver
    clears them; autograd's .grad accumulates the same way.
    """

    def __init__(self, param: torch.nn.Parameter, *, name: str = "",
                 owner: BlobOwner | None = None) -> None:
        super().__init__(param.shape, name=name, owner=owner, device=param.device,
                         dtype=param.dtype)
        self.param = param
        # the parameter and its .grad are the blob's own memory, kept across passes
        self._owned = {"data": True, "diff": True}

    def _get(self, which: str) -> torch.Tensor | None:
        return self.param.data if which == "data" else self.param.grad

    def _set(self, which: str, t: torch.Tensor | None, owned: bool = True) -> None:
        if which == "data":
            if t is not None:
                self.param.data = t
        else:
            self.param.grad = t

    def _array(self, which: str) -> np.ndarray:
        if which == "diff":
            own_diff(self.param)  # writes into the array must not reach the solver's history
        arr = super()._array(which)
        if which == "diff" and self._out["diff"]:
            # the array is the diff's memory from now on: the solver zeroes it in place
            self.param._decaffe_diff_out = True
        return arr

    def _gpu_ptr(self, which: str) -> int:
        if which == "diff":
            own_diff(self.param)
            self.param._decaffe_diff_out = True  # the address must stay the diff's
        return super()._gpu_ptr(which)

    def tensor(self, which: str = "data") -> torch.Tensor:
        if which == "data":
            return self.param.data
        if self.param.grad is None or self.param.grad.shape != self.param.shape:
            self.param.grad = torch.zeros_like(self.param.data)
        return self.param.grad

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.param.shape)

    @property
    def count(self) -> int:
        return self.param.numel()

    def reshape(self, *shape: SupportsIndex | Sequence[SupportsIndex]) -> None:
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        shape = check_shape(shape, f"blob '{self.name}'")
        if shape != tuple(self.param.shape):
            check_memory(shape, self.param.element_size(), self.param.device,
                         f"blob '{self.name}'")
            self.param.data = torch.zeros(shape, device=self.param.device, dtype=self.param.dtype)
            self.param.grad = None
            self._shape = shape

    def to(self, device: torch.device) -> None:
        self.push()
        self._device = device
        self._host = {"data": None, "diff": None}
