"""`-compile`: a net's passes through ``torch.compile`` (TorchInductor).

The data layers run as always (they read files in their own threads); the layers after them
— the rest of the forward pass, and through AOTAutograd its backward — are one compiled
graph per pass kind (training with a graph, testing without one, pycaffe's deploy forward).
What the layers compute is unchanged: Caffe's arithmetic, BatchNorm's statistics (updated in
place inside the graph), Dropout's masks drawn from torch's generator as eagerly
(inductor's ``fallback_random``). On the CPU, inductor's layout optimisation (convolutions in
channels_last) is turned off: it made compiled training slower than eager (bench_compile.py).
Both are inductor's process-wide settings, so a hand-written model compiled in the same
process is compiled the same way.

**Only what is needed leaves the graph**: the weighted loss and the net's outputs (the tops
no layer reads: the loss and accuracy blobs the solver displays and tests, a deploy net's
scores). Every other blob the pass makes stays inside the graph, where the compiler fuses
it away. Such a blob is made when something first reads it (pycaffe's ``net.blobs[name]``,
the solver's debug_info lines, ``first_nonfinite_layer``, a partial ``net.forward``): the
pass is run again eagerly, once, from what it read — the input tensors, torch's generator
state, and the layers' parameters and buffers as they were before the pass (a copy, taken
before the pass when they have changed since the last copy) — so the values are exactly the
eager pass's. The rerun changes nothing else: parameters, statistics, carried recurrent
state and the generator are put back as they were. The outputs keep the compiled values.

Compilation goes through PyTorch's own caches (inductor's FX graph cache and AOTAutograd's
cache, both on by default; ``TORCHINDUCTOR_CACHE_DIR`` moves them), so a second run of the
same net compiles from the cache. The first pass of each kind logs one line with the time
spent compiling and whether the caches were hit.

Where a net cannot be compiled (no torch.compile, a Python layer), the net runs eagerly and
one warning says why; a failure while compiling falls back the same way. A pass with pycaffe
callbacks registered (``net.before_forward(...)``) runs eagerly, the callbacks seeing each
layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from . import log
from . import mode as _mode

_warned: set[str] = set()
_state = {"enabled": False}

# the counters of torch's caches that tell a hit from a miss (torch._dynamo.utils.counters)
_CACHE_COUNTERS = (("inductor", "fxgraph_cache_hit"), ("inductor", "fxgraph_cache_miss"),
                   ("aot_autograd", "autograd_cache_hit"), ("aot_autograd", "autograd_cache_miss"))


def set_compile(flag: bool) -> None:
    """Compile every net built from now on (decaffe train|test|time -compile)."""
    _state["enabled"] = bool(flag)


def enabled() -> bool:
    return _state["enabled"]


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


# A net here is a decaffe.net.Net, named as torch.nn.Module: the engine imports this module,
# so naming Net would be an import cycle (tests/test_layout.py).
def why_not(net: torch.nn.Module) -> str | None:
    """Why this net cannot be compiled, or None."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if any(rec.type == "Python" for rec in net.layer_records):
        return "it has Python layers (their code is the user's, not traceable)"
    return None


def cache_counters() -> dict[str, int]:
    """torch's compile-cache hit and miss counts so far in this process (FX graph cache,
    AOTAutograd cache), as ``{"fxgraph_cache_hit": n, ...}``."""
    from torch._dynamo.utils import counters  # heavy (loads torch._dynamo): only when compiling

    return {name: int(counters[group][name]) for group, name in _CACHE_COUNTERS}


class _Pending:
    """What rerunning a compiled pass eagerly needs: its inputs, torch's generator state
    before it, and the kind of pass (fuse: the solver's BatchNorm+Scale kernel)."""

    __slots__ = ("inputs", "rng", "fuse")

    def __init__(self, inputs: list[torch.Tensor], rng: torch.Tensor, fuse: bool) -> None:
        self.inputs, self.rng, self.fuse = inputs, rng, fuse


class CompiledPasses:
    """A net's passes through torch.compile, returning only the loss and the outputs; the
    other blobs made on request (see the module docstring)."""

    def __init__(self, net: torch.nn.Module, mode: str | None = None,
                 backend: str | Callable | None = None) -> None:
        self.net = net
        self.backend = backend if backend is not None else "inductor"
        records = net.layer_records
        layers = [rec.layer for rec in records]
        self.first = sum(1 for layer in layers if getattr(layer, "is_data", False)
                         or layer.type == "Input")
        # the data/Input layers come first in every net that has them; if not, compile all
        if any(getattr(layer, "is_data", False) for layer in layers[self.first:]):
            self.first = 0
        self.last = len(records) - 1
        made_before = {t for rec in records[:self.first] for t in rec.tops}
        made_here = [t for rec in records[self.first:] for t in rec.tops]
        # the blobs the graph reads from outside (data and Input tops), in a fixed order
        self.inputs = sorted({b for rec in records[self.first:] for b in rec.bottoms
                              if b in made_before})
        self.keep = [t for t in net._output_ids if t in set(made_here)]
        keep = set(self.keep)
        self.lazy = sorted(set(made_here) - keep)
        self.mode = mode
        self._fns: dict[tuple[bool, bool], object] = {}
        self._failed = False
        self._first: tuple | None = None  # a pass kind compiling: (kind, start, counters)
        self._pending: _Pending | None = None
        # the layers' parameters and buffers, and their copies as they were before the pass
        self._state: list[torch.Tensor] = []
        self._buffer_slots: list[tuple[torch.nn.Module, str]] = []
        self._copies: list[torch.Tensor] = []
        self._buffer_copies: list[torch.Tensor | None] = []

    # -- compiling ------------------------------------------------------------------------------
    def _compiled(self, grad: bool, fuse: bool):
        fn = self._fns.get((grad, fuse))
        if fn is None:
            net, first, last, keep = self.net, self.first, self.last, self.keep
            names = self.inputs
            needs_grad = net._input_needs_grad

            def body(*inputs: torch.Tensor) -> tuple:
                cur = {}
                for bid, t in zip(names, inputs):
                    if grad and bid in needs_grad:
                        t = t.detach().requires_grad_()
                    cur[bid] = t
                loss = net._forward_range(first, last, record=False, grad=grad, fuse=fuse,
                                          cur=cur, bind=False)
                return loss, tuple(cur[t] for t in keep)

            fn = torch.compile(body, backend=self.backend, mode=self.mode, dynamic=False)
            self._fns[(grad, fuse)] = fn
            self._first = ("training" if grad else "forward passes",
                           time.perf_counter(), cache_counters())
        return fn

    def log_compile(self) -> None:
        """After a pass kind's first pass (its backward included): one log line with the
        time spent compiling it and whether torch's caches served it."""
        if self._first is None:
            return
        kind, t0, before = self._first
        self._first = None
        took = time.perf_counter() - t0
        after = cache_counters()
        hits = sum(after[k] - before[k] for k in ("fxgraph_cache_hit", "autograd_cache_hit"))
        misses = sum(after[k] - before[k] for k in ("fxgraph_cache_miss",
                                                     "autograd_cache_miss"))
        name = f" {self.net.name}" if self.net.name else ""
        log.info(f"Compiled net{name} for {kind} in {log.fmt(took)}s (torch's compile "
                 f"caches: {hits} hits, {misses} misses, in {_cache_dir()})")

    def forward(self, grad: bool, fuse: bool = True) -> torch.Tensor | None:
        """The net's loss (a tensor or None) after one pass; grad: build the graph; fuse: the
        solver's BatchNorm+Scale kernel (False: pycaffe's layer-by-layer forward)."""
        net = self.net
        self.drop()
        if self._failed or any(net._callbacks[k] for k in ("before_forward", "after_forward")):
            return net._forward_range(0, self.last, record=False, grad=None if grad else False,
                                      fuse=fuse)
        net._ensure_device()
        net._push_host_writes()
        if self.first > 0:
            net._forward_range(0, self.first - 1, record=False, grad=False)
        use_grad = net._needs_graph if grad else False
        blobs = net._blob_list
        inputs = [blobs[b].tensor() for b in self.inputs]
        self._copy_state()
        rng = torch.get_rng_state()
        fn = self._compiled(use_grad, fuse)
        try:
            loss, outs = fn(*inputs)
        except Exception as e:  # noqa: BLE001 - any compiler failure: run eagerly instead
            self._failed = True
            self._first = None
            _warn_once(f"fail:{net.name}", f"-compile: net '{net.name}' could not be compiled "
                       f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                       "running it eagerly")
            return net._forward_range(self.first, self.last, record=False,
                                      grad=None if grad else False, fuse=fuse)
        for tid, t in zip(self.keep, outs):
            blobs[tid].bind(t)
        # the user fills Input blobs in place: the rerun reads copies (a batch: small)
        held = [t.detach().clone() for t in inputs]
        self._pending = _Pending(held, rng, fuse)
        for b in self.lazy:
            blobs[b]._lazy = self.materialize
        if not use_grad:
            self.log_compile()
        return loss

    # -- the other blobs, on request --------------------------------------------------------
    def _collect_state(self) -> None:
        seen: set[int] = set()
        for rec in self.net.layer_records:
            for m in rec.layer.modules():
                if id(m) in seen:
                    continue
                seen.add(id(m))
                for q in m._parameters.values():
                    if q is not None and id(q) not in seen:
                        seen.add(id(q))
                        self._state.append(q)
                self._buffer_slots.extend((m, name) for name in m._buffers)

    def _copy_state(self) -> None:
        """Copy the parameters and buffers as the pass will read them (the solver's update,
        BatchNorm's statistics, a user's writes change them before a blob is asked for)."""
        if not self._state and not self._buffer_slots:
            self._collect_state()
        if [tuple(c.shape) for c in self._copies] != [tuple(q.shape) for q in self._state]:
            self._copies = [torch.empty_like(q.detach()) for q in self._state]
        with torch.no_grad():
            if self._copies:
                torch._foreach_copy_(self._copies, [q.detach() for q in self._state])
            # a layer may rebind a buffer (recurrent layers' carried state)
            self._buffer_copies = [None if (b := m._buffers[n]) is None else b.detach().clone()
                                   for m, n in self._buffer_slots]

    def drop(self) -> None:
        """Forget the last pass's unmade blobs (a new pass, or a reshape, replaces them)."""
        if self._pending is None:
            return
        self._pending = None
        blobs = self.net._blob_list
        for b in self.lazy:
            if blobs[b]._lazy == self.materialize:
                blobs[b]._lazy = None

    def materialize(self) -> None:
        """Make every blob the last compiled pass left unmade (and no later pass made), by
        rerunning that pass eagerly from its inputs, generator state, parameters and buffers
        (the module docstring)."""
        p = self._pending
        if p is None:
            return
        net = self.net
        blobs = net._blob_list
        wanted = [b for b in self.lazy if blobs[b]._lazy == self.materialize]
        self.drop()
        if not wanted:
            return
        params = self._state
        live_params = [q.data for q in params]
        live_buffers = [m._buffers[n] for m, n in self._buffer_slots]
        live_rng = torch.get_rng_state()
        cur = dict(zip(self.inputs, p.inputs))
        try:
            with torch.no_grad():
                for q, c in zip(params, self._copies):
                    q.data = c
                for (m, n), c in zip(self._buffer_slots, self._buffer_copies):
                    m._buffers[n] = c
                torch.set_rng_state(p.rng)
                net._forward_range(self.first, self.last, record=False, grad=False,
                                   fuse=p.fuse, cur=cur, bind=False)
        finally:
            for q, d in zip(params, live_params):
                q.data = d
            for (m, n), b in zip(self._buffer_slots, live_buffers):
                m._buffers[n] = b
            torch.set_rng_state(live_rng)
        for b in wanted:
            blobs[b].bind(cur[b])


def _cache_dir() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir  # heavy: inductor's
    except ImportError:  # an older torch keeps it elsewhere
        return "torch's cache directory"
    return cache_dir()


def compile_net(net: torch.nn.Module, mode: str | None = None,
                backend: str | Callable | None = None) -> bool:
    """Run this net's solver/test passes and a deploy net's forward compiled (see the module
    docstring); returns False, with one warning, where it cannot be. mode: torch.compile's
    mode; backend: its backend (default inductor; a callable backend sees the captured
    graphs)."""
    reason = why_not(net)
    if reason is not None:
        _warn_once(f"why:{net.name}", f"-compile: net '{net.name}' runs eagerly: {reason}")
        return False
    # Dropout's masks from torch's generator, as eagerly (the rerun of a pass draws them again)
    import torch._inductor.config as inductor_config  # heavy (loads inductor): only here

    inductor_config.fallback_random = True
    if net.device.type == "cpu" and _mode.device().type == "cpu":
        # channels_last convolutions, inductor's layout optimisation, cost on the CPU: ResNet-18
        # (32x32, 1 thread) trained 2x slower compiled than eagerly with it, 7% faster without
        inductor_config.layout_optimization = False
    net._compiled = CompiledPasses(net, mode, backend)
    if net.device.type == "cuda":
        net.to_device(net.device)  # channels_last weights
    return True
