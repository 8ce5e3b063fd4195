"""`-compile`: a net's passes through ``torch.compile`` (TorchInductor).

The data layers run as always (they read files in their own threads); the layers after them
— the whole rest of the forward pass, and through AOTAutograd its backward — are one
compiled graph per pass kind (training with a graph, or testing without one). The solver's
update runs the six rules' multi-tensor (``torch._foreach_*``) kernels as before. What the
layers do is unchanged: Caffe's arithmetic, BatchNorm's statistics (updated in place inside
the graph), the same blobs bound to the same tops.

Where a net cannot be compiled (no working compiler for this platform, a layer the tracer
refuses, a Python layer, debug_info), the net runs eagerly and one warning says why; a
failure while compiling (the first pass of each kind) falls back the same way.
"""

from __future__ import annotations

import torch

from . import log

_warned: set[str] = set()
_state = {"enabled": False}


def set_compile(flag: bool) -> None:
    """Compile every net built from now on (decaffe train|test|time -compile)."""
    _state["enabled"] = bool(flag)


def enabled() -> bool:
    return _state["enabled"]


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def why_not(net) -> str | None:
    """Why this net cannot be compiled, or None."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    types = {layer.type for layer in net._layers}
    if "Python" in types:
        return "it has Python layers (their code is the user's, not traceable)"
    if net.debug_info:
        return "debug_info shows every blob, which the compiled graph does not keep"
    return None


class CompiledPasses:
    """A net's forward (training and testing) through torch.compile, with eager fallback."""

    def __init__(self, net, mode: str | None = None) -> None:
        self.net = net
        self.first = sum(1 for layer in net._layers if getattr(layer, "is_data", False)
                         or layer.type == "Input")
        # the data/Input layers come first in every net that has them; if not, compile all
        if any(getattr(layer, "is_data", False) for layer in net._layers[self.first:]):
            self.first = 0
        self.mode = mode
        self._fns: dict[bool, object] = {}
        self._failed = False

    def _compiled(self, grad: bool):
        fn = self._fns.get(grad)
        if fn is None:
            net, first, last = self.net, self.first, len(self.net._layers) - 1

            def body():
                return net._forward_range(first, last, record=False, grad=grad, fuse=True)

            fn = torch.compile(body, mode=self.mode, dynamic=False)
            self._fns[grad] = fn
        return fn

    def forward(self, grad: bool) -> torch.Tensor | None:
        """The net's loss (a tensor or None) after one pass; grad: build the graph."""
        net = self.net
        last = len(net._layers) - 1
        if self._failed:
            return net._forward_range(0, last, record=False, grad=None if grad else False,
                                      fuse=True)
        net._ensure_device()
        net._push_host_writes()
        if self.first > 0:
            net._forward_range(0, self.first - 1, record=False, grad=False)
        use_grad = net._needs_graph if grad else False
        try:
            return self._compiled(use_grad)()
        except Exception as e:  # noqa: BLE001 - any compiler failure: run eagerly instead
            self._failed = True
            _warn_once(f"fail:{net.name}", f"-compile: net '{net.name}' could not be compiled "
                       f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                       "running it eagerly")
            return net._forward_range(self.first, last, record=False,
                                      grad=None if grad else False, fuse=True)


def compile_net(net, mode: str | None = None) -> bool:
    """Run this net's solver/test passes compiled (see the module docstring); returns False,
    with one warning, where it cannot be."""
    reason = why_not(net)
    if reason is not None:
        _warn_once(f"why:{net.name}", f"-compile: net '{net.name}' runs eagerly: {reason}")
        return False
    net._compiled = CompiledPasses(net, mode)
    if net.device.type == "cuda":
        net.to_device(net.device)  # channels_last weights
    return True
