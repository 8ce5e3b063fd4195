"""Blob: pycaffe's view of a tensor, with `data` and `diff` as writable numpy arrays.

On the CPU the arrays share memory with the tensors, so writing
`blob.data[...] = x` changes what the next forward reads, with no copy.
On a GPU the arrays are host copies, synchronised as Caffe's SyncedMemory
does: reading gives the device's latest values; writing marks the host copy
as the newest, and the net uploads it before its next pass.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import DecaffeError


class Blob:
    """A named N-d array with a diff of the same shape (Caffe's Blob)."""

    def __init__(self, shape=(), *, name: str = "", owner=None,
                 device: torch.device | None = None, dtype: torch.dtype = torch.float32):
        self.name = name
        self._shape = tuple(int(s) for s in shape)
        self._owner = owner  # the Net whose pass must upload host writes
        self._device = device or torch.device("cpu")
        self._dtype = dtype
        self._t: torch.Tensor | None = None
        self._g: torch.Tensor | None = None
        self._host = {"data": None, "diff": None}
        self._dirty = {"data": False, "diff": False}

    # -- tensors, for the engine -------------------------------------------------------
    def _get(self, which: str) -> torch.Tensor | None:
        return self._t if which == "data" else self._g

    def _set(self, which: str, t: torch.Tensor | None) -> None:
        if which == "data":
            self._t = t
        else:
            self._g = t

    def tensor(self, which: str = "data") -> torch.Tensor:
        """The device tensor behind data or diff (allocated as zeros when first needed)."""
        t = self._get(which)
        if t is None or tuple(t.shape) != self._shape:
            t = torch.zeros(self._shape, device=self._device, dtype=self._dtype)
            self._set(which, t)
        return t

    def bind(self, t: torch.Tensor) -> None:
        """Make t the blob's data (a layer's fresh output); host copies become stale."""
        self._t = t
        self._shape = tuple(t.shape)
        self._dirty["data"] = False

    def set_diff(self, t: torch.Tensor) -> None:
        """Make t the blob's diff (a gradient the engine computed); host copies become stale."""
        if tuple(t.shape) != self._shape:
            t = t.reshape(self._shape)
        self._g = t
        self._dirty["diff"] = False

    def push(self) -> None:
        """Upload host writes to the device (called by the net before a pass)."""
        for which in ("data", "diff"):
            if self._dirty[which]:
                host = self._host[which]
                t = self.tensor(which)
                with torch.no_grad():
                    t.copy_(torch.from_numpy(host).reshape(t.shape))
                self._dirty[which] = False

    def _array(self, which: str) -> np.ndarray:
        if self._dirty[which]:
            return self._host[which]
        t = self.tensor(which).detach()
        if t.dtype in (torch.bfloat16, torch.float16):
            # a bf16/fp16 activation (decaffe.precision): pycaffe sees a float32 copy
            return t.float().cpu().numpy()
        if t.device.type == "cpu":
            return t.numpy()
        host = t.cpu().numpy()
        self._host[which] = host
        self._dirty[which] = True
        if self._owner is not None:
            self._owner._dirty_blobs.add(self)
        return host

    def _assign(self, which: str, value) -> None:
        arr = self._array(which)
        arr[...] = value

    # -- pycaffe's interface -------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        return self._array("data")

    @data.setter
    def data(self, value) -> None:
        self._assign("data", value)

    @property
    def diff(self) -> np.ndarray:
        return self._array("diff")

    @diff.setter
    def diff(self, value) -> None:
        self._assign("diff", value)

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

    def reshape(self, *shape) -> None:
        """Change the blob's shape; contents are kept only when the shape is unchanged."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise DecaffeError(f"blob '{self.name}': negative dimension in {shape}")
        if shape != self._shape:
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
                self._set(which, t.detach().to(device))
            self._host[which] = None

    def __repr__(self) -> str:
        return f"<Blob {self.name!r} shape={self._shape}>"


class ParamBlob(Blob):
    """A layer's parameter blob: data is the torch Parameter, diff its .grad.

    Caffe accumulates parameter diffs across backward passes until the solver
    clears them; autograd's .grad accumulates the same way.
    """

    def __init__(self, param: torch.nn.Parameter, *, name: str = "", owner=None):
        super().__init__(param.shape, name=name, owner=owner, device=param.device,
                         dtype=param.dtype)
        self.param = param

    def _get(self, which: str):
        return self.param.data if which == "data" else self.param.grad

    def _set(self, which: str, t) -> None:
        if which == "data":
            if t is not None:
                self.param.data = t
        else:
            self.param.grad = t

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

    def reshape(self, *shape) -> None:
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if shape != tuple(self.param.shape):
            self.param.data = torch.zeros(shape, device=self.param.device, dtype=self.param.dtype)
            self.param.grad = None
            self._shape = shape

    def to(self, device: torch.device) -> None:
        self.push()
        self._device = device
        self._host = {"data": None, "diff": None}
