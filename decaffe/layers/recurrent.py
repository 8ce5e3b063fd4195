"""Recurrent layers: RNN and LSTM (Caffe's RecurrentLayer family) and LSTMUnit.

Caffe builds an unrolled inner net for a recurrent layer; decaffe computes the same
recurrence directly: one matmul projects every timestep's input, then a loop over time
applies the recurrent weights. The parameter blobs, their order and shapes are exactly
those of Caffe's unrolled net, so caffemodels trained with Caffe load unchanged.

Shared conventions (Caffe's RecurrentLayer):

- bottoms: x (T×N×...), cont (T×N), optionally x_static (N×...), and with
  ``recurrent_param.expose_hidden`` the initial states (1×N×H each: h0, and c0 for LSTM);
- tops: the output sequence (T×N×H) and, with expose_hidden, the final states;
- ``cont[t, n]`` multiplies the previous hidden state before step t (0 starts a new
  sequence); the LSTM also drops the previous cell through its forget gate;
- without expose_hidden the final states of one forward pass are the initial states of the
  next (Caffe copies h_T into h_0 before each pass); no gradient crosses passes;
- with expose_hidden Caffe shares only the *data* of h0/c0 and hT/cT with the unrolled net:
  no gradient reaches the h0/c0 bottoms and diffs on the hT/cT tops are ignored;
- cont never receives a gradient (Caffe refuses to force backward into it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx

from .. import fillers
from ..layer import Layer, Shape, Tops, register
from ..proto import caffe_pb2

log = logging.getLogger("decaffe.recurrent")


class _LSTMCell(torch.autograd.Function):
    """One LSTMUnit step with Caffe's own backward.

    Forward: i, f', o = σ(gates[:3H]) split in three, g = tanh(gates[3H:]), f = cont·f',
    c = f·c_prev + i·g, h = o·tanh(c). Backward uses Caffe's formulas, in particular the
    forget-gate term f·(1−f) with f already scaled by cont (equal to the true derivative
    for binary cont, which is what Caffe's indicators are).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, c_prev: torch.Tensor, gates: torch.Tensor,
                cont: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hdim = c_prev.shape[-1]
        sig = torch.sigmoid(gates[:, : 3 * hdim])
        i, f, o = sig[:, :hdim], sig[:, hdim: 2 * hdim], sig[:, 2 * hdim:]
        f = f * cont  # cont (N×1) is 0 or 1 at a sequence boundary
        g = torch.tanh(gates[:, 3 * hdim:])
        c = torch.addcmul(i * g, f, c_prev)
        tanh_c = torch.tanh(c)
        h = o * tanh_c
        ctx.save_for_backward(c_prev, i, f, o, g, tanh_c)
        return c, h

    @staticmethod
    def backward(ctx: FunctionCtx, dc: torch.Tensor,
                 dh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        c_prev, i, f, o, g, tanh_c = ctx.saved_tensors
        c_term = torch.addcmul(dc, dh * o, 1 - tanh_c * tanh_c)
        d_i = c_term * g * i * (1 - i)
        d_f = c_term * c_prev * f * (1 - f)
        d_o = dh * tanh_c * o * (1 - o)
        d_g = c_term * i * (1 - g * g)
        return c_term * f, torch.cat((d_i, d_f, d_o, d_g), dim=1), None


class _RecurrentLayer(Layer):
    """What RNN and LSTM share: bottoms/tops, shape checks, carried state, the x projection."""

    # names of the recurrent states (h0 → hT, ...), in Caffe's bottom/top order
    state_names: tuple[str, ...] = ()

    def __init__(self, lp: caffe_pb2.LayerParameter, phase: int) -> None:
        super().__init__(lp, phase)
        self.expose_hidden = bool(lp.recurrent_param.expose_hidden)
        exposed = len(self.state_names) * self.expose_hidden
        # Caffe's Min/MaxBottomBlobs and ExactNumTopBlobs depend on expose_hidden
        self.min_bottoms = 2 + exposed
        self.max_bottoms = 3 + exposed
        self.exact_tops = 1 + exposed
        # carried states (flat, with Caffe's blob capacity semantics); moved with the module
        for k in range(len(self.state_names)):
            self.register_buffer(f"_carry{k}", None, persistent=False)

    def allow_force_backward(self, bottom_index: int) -> bool:
        # Caffe cannot back-propagate to the sequence indicators (bottom 1)
        return bottom_index != 1

    # -- set-up ---------------------------------------------------------------------------------
    def _check_bottoms(self, shapes: list[Shape]) -> None:
        x, cont = shapes[0], shapes[1]
        self.check(len(x) >= 3, f"bottom[0] must have at least 3 axes -- (#timesteps, #streams, "
                   f"input...), its shape is {x}; Caffe projects it from axis 2")
        self.check(len(cont) == 2, f"bottom[1] (cont) must have exactly 2 axes -- (#timesteps, "
                   f"#streams), its shape is {cont}")
        self.check(tuple(cont) == tuple(x[:2]), f"bottom[1] (cont) shape {cont} must be "
                   f"(#timesteps, #streams) = {tuple(x[:2])} of bottom[0]")
        if self.static_input:
            s = shapes[2]
            self.check(len(s) >= 2, f"bottom[2] (static input) must have at least 2 axes -- "
                       f"(#streams, input...), its shape is {s}")
            self.check(s[0] == x[1], f"bottom[2] (static input) has {s[0]} streams, bottom[0] "
                       f"has {x[1]}")

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.recurrent_param
        self.check(p.num_output > 0, "num_output must be positive", "recurrent_param.num_output")
        exposed = len(self.state_names) * self.expose_hidden
        self.static_input = len(bottom_shapes) > 2 + exposed
        self._check_bottoms(bottom_shapes)
        x = bottom_shapes[0]
        self.T = x[0]
        self.H = p.num_output
        self.D = math.prod(x[2:])
        self.Ds = math.prod(bottom_shapes[2][1:]) if self.static_input else 0
        if self.num_blobs == 0:
            for shape, filler in self.blob_shapes():
                self.add_blob(fillers.fill(filler, shape, where=self.name))
        self.check(self.num_blobs == len(self.blob_shapes()),
                   f"has {self.num_blobs} blobs, expected {len(self.blob_shapes())}")

    def blob_shapes(self) -> list[tuple[Shape, caffe_pb2.FillerParameter]]:  # pragma: no cover
        raise NotImplementedError

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        self._check_bottoms(bottom_shapes)
        x = bottom_shapes[0]
        self.check(x[0] == self.T, f"input number of timesteps changed: {x[0]}, the layer was "
                   f"set up for {self.T}")
        self.check(math.prod(x[2:]) == self.D, f"input size {math.prod(x[2:])} per timestep and "
                   f"stream (shape {x}) does not match the weights' {self.D}")
        if self.static_input:
            ds = math.prod(bottom_shapes[2][1:])
            self.check(ds == self.Ds, f"static input size {ds} does not match the weights' "
                       f"{self.Ds}")
        n = x[1]
        state = (1, n, self.H)
        if self.expose_hidden:
            first = 2 + self.static_input
            for j, name in enumerate(self.state_names):
                got = tuple(bottom_shapes[first + j])
                self.check(got == state, f"bottom[{first + j}] ({name}0) shape {got} must match "
                           f"the hidden state input shape {state}")
        tops = [(self.T, n, self.H)]
        if self.expose_hidden:
            tops += [state] * len(self.state_names)
        return tops

    # -- carried state --------------------------------------------------------------------------
    def reset(self) -> None:
        """Zero the carried hidden state (Caffe's RecurrentLayer::Reset)."""
        for k in range(len(self.state_names)):
            buf = getattr(self, f"_carry{k}")
            if buf is not None:
                setattr(self, f"_carry{k}", torch.zeros_like(buf))

    def _initial_states(self, hidden: Sequence[torch.Tensor], n: int,
                        like: torch.Tensor) -> list[torch.Tensor]:
        if self.expose_hidden:
            # Caffe shares only the data of h0/c0: no gradient flows into these bottoms
            return [h.detach().reshape(n, self.H) for h in hidden]
        states = []
        need = n * self.H
        for k in range(len(self.state_names)):
            buf = getattr(self, f"_carry{k}")
            if buf is None or buf.numel() < need:
                # Caffe reallocates (zeroed) a state blob that outgrows its capacity;
                # a smaller batch keeps reading the front of the old one
                buf = torch.zeros(need, dtype=like.dtype, device=like.device)
                setattr(self, f"_carry{k}", buf)
            elif buf.dtype != like.dtype or buf.device != like.device:
                buf = buf.to(like.device, like.dtype)
                setattr(self, f"_carry{k}", buf)
            states.append(buf[:need].view(n, self.H))
        return states

    def _carry(self, finals: list[torch.Tensor]) -> None:
        for k, t in enumerate(finals):
            buf = getattr(self, f"_carry{k}")
            flat = t.detach().reshape(-1)
            # a new tensor, never an in-place write: this step's graph may have saved the old one
            setattr(self, f"_carry{k}", torch.cat((flat, buf[flat.numel():])))

    # -- forward --------------------------------------------------------------------------------
    def _project(self, x: torch.Tensor, x_static: torch.Tensor | None, w_x: torch.Tensor,
                 b_x: torch.Tensor, w_s: torch.Tensor | None) -> torch.Tensor:
        """W·x_t + b for every timestep in one matmul, plus the static term (T×N×G)."""
        t, n = x.shape[0], x.shape[1]
        proj = F.linear(x.reshape(t * n, self.D), w_x, b_x).view(t, n, -1)
        if x_static is not None:
            proj = proj + F.linear(x_static.reshape(n, self.Ds), w_s).unsqueeze(0)
        return proj

    def _split_bottoms(self, bottoms: Sequence[torch.Tensor]) -> tuple[
            torch.Tensor, torch.Tensor, torch.Tensor | None, Sequence[torch.Tensor]]:
        x, cont = bottoms[0], bottoms[1]
        x_static = bottoms[2] if self.static_input else None
        hidden = bottoms[2 + self.static_input:]
        # cont is an indicator: Caffe never back-propagates into it
        return x, cont.detach().to(x.dtype), x_static, hidden

    def _debug(self, step: int, **blobs: torch.Tensor) -> None:
        # Caffe's unrolled-net debug_info: mean absolute value of each step's blobs
        for name, t in blobs.items():
            log.info("    [Forward] Layer %s, top blob %s_%d data: %.6g", self.name, name, step,
                     float(t.detach().abs().mean()))


@register("RNN")
class RNNLayer(_RecurrentLayer):
    """Caffe's RNN: an Elman network with an output layer, run over T timesteps.

    Bottoms: x, T×N×… (D values per timestep and stream; T and D fixed at setup); cont, T×N
        sequence-continuation flags, which get no gradient; optionally x_static, N×… (D_static
        values per stream); with expose_hidden, h0, 1×N×H, which gets no gradient.
    Tops: o, T×N×H; with expose_hidden, the final state h_T, 1×N×H.
    Blobs: in Caffe's order, W_xh H×D, b_h (H,), W_xh_static H×D_static (only with
        x_static), W_hh H×H, W_ho H×H, b_o (H,).
    Params: recurrent_param.num_output H (required, > 0), weight_filler (the weights) and
        bias_filler (the biases) (default constant 0), debug_info (default false),
        expose_hidden (default false).
    Source: src/caffe/layers/rnn_layer.cpp and recurrent_layer.cpp.

        h_t = tanh(W_hh·(cont_t·h_{t−1}) + W_xh·x_t + b_h [+ W_xh_static·x_static])
        o_t = tanh(W_ho·h_t + b_o)

    The module docstring gives the conventions shared with LSTM (carried state, cont).
    """

    state_names = ("h",)

    def blob_shapes(self) -> list[tuple[Shape, caffe_pb2.FillerParameter]]:
        p, h = self.lp.recurrent_param, self.H
        shapes = [((h, self.D), p.weight_filler), ((h,), p.bias_filler)]
        if self.static_input:
            shapes.append(((h, self.Ds), p.weight_filler))
        shapes += [((h, h), p.weight_filler), ((h, h), p.weight_filler), ((h,), p.bias_filler)]
        return shapes

    def forward(self, *bottoms: torch.Tensor) -> Tops:
        x, cont, x_static, hidden = self._split_bottoms(bottoms)
        w = list(self.blob_params)
        w_s = w.pop(2) if self.static_input else None
        w_xh, b_h, w_hh, w_ho, b_o = w
        proj = self._project(x, x_static, w_xh, b_h, w_s)
        n = x.shape[1]
        (h,) = self._initial_states(hidden, n, proj)
        w_hh_t = w_hh.t()
        debug = self.lp.recurrent_param.debug_info
        hs = []
        for t in range(self.T):
            h = torch.tanh(torch.addmm(proj[t], h * cont[t].unsqueeze(1), w_hh_t))
            hs.append(h)
            if debug:
                self._debug(t + 1, h=h)
        hseq = torch.stack(hs)
        o = torch.tanh(F.linear(hseq, w_ho, b_o))
        if self.expose_hidden:
            return o, h.detach().unsqueeze(0)
        self._carry([h])
        return o


@register("LSTM")
class LSTMLayer(_RecurrentLayer):
    """Caffe's LSTM: a long short-term memory layer run over T timesteps.

    Bottoms: x, T×N×… (D values per timestep and stream; T and D fixed at setup); cont, T×N
        sequence-continuation flags, which get no gradient; optionally x_static, N×… (D_static
        values per stream); with expose_hidden, h0 and c0, 1×N×H each, which get no gradient.
    Tops: h, T×N×H; with expose_hidden, the final states h_T and c_T, 1×N×H each.
    Blobs: in Caffe's order, W_xc 4H×D, b_c (4H,), W_xc_static 4H×D_static (only with
        x_static), W_hc 4H×H; gate rows in the order i, f, o, g.
    Params: recurrent_param.num_output H (required, > 0), weight_filler (the weights) and
        bias_filler (the bias) (default constant 0), debug_info (default false), expose_hidden
        (default false).
    Source: src/caffe/layers/lstm_layer.cpp and recurrent_layer.cpp.

        gates_t = W_hc·(cont_t·h_{t−1}) + W_xc·x_t + b_c [+ W_xc_static·x_static]   (N×4H)
        i = σ(gates_t[:H]),  f = cont_t·σ(gates_t[H:2H]),  o = σ(gates_t[2H:3H]),
        g = tanh(gates_t[3H:])
        c_t = f·c_{t−1} + i·g,   h_t = o·tanh(c_t)

    The module docstring gives the conventions shared with RNN (carried state, cont).
    """

    state_names = ("h", "c")

    def blob_shapes(self) -> list[tuple[Shape, caffe_pb2.FillerParameter]]:
        p, g = self.lp.recurrent_param, 4 * self.H
        shapes = [((g, self.D), p.weight_filler), ((g,), p.bias_filler)]
        if self.static_input:
            shapes.append(((g, self.Ds), p.weight_filler))
        shapes.append(((g, self.H), p.weight_filler))
        return shapes

    def forward(self, *bottoms: torch.Tensor) -> Tops:
        x, cont, x_static, hidden = self._split_bottoms(bottoms)
        w = list(self.blob_params)
        w_s = w.pop(2) if self.static_input else None
        w_xc, b_c, w_hc = w
        proj = self._project(x, x_static, w_xc, b_c, w_s)
        n = x.shape[1]
        h, c = self._initial_states(hidden, n, proj)
        w_hc_t = w_hc.t()
        debug = self.lp.recurrent_param.debug_info
        hs = []
        for t in range(self.T):
            ct = cont[t].unsqueeze(1)
            gates = torch.addmm(proj[t], h * ct, w_hc_t)
            c, h = _LSTMCell.apply(c, gates, ct)
            hs.append(h)
            if debug:
                self._debug(t + 1, c=c, h=h)
        hseq = torch.stack(hs)
        if self.expose_hidden:
            return hseq, h.detach().unsqueeze(0), c.detach().unsqueeze(0)
        self._carry([h, c])
        return hseq


@register("LSTMUnit")
class LSTMUnitLayer(Layer):
    """Caffe's LSTMUnit: one LSTM step on explicit blobs.

    Bottoms: c_prev, 1×N×H; the gate inputs X, 1×N×4H (order i, f, o, g); cont, 1×N, which
        gets no gradient.
    Tops: c, 1×N×H; h, 1×N×H; computed as in LSTM.
    Blobs: none.
    Params: none.
    Source: src/caffe/layers/lstm_unit_layer.cpp.

    Backward from the blobs follows lstm_unit_layer.cpp, which reads the top c: with
    t = tanh(c), dc' = dc + dh·o·(1 − t²), the diffs are dc_prev = dc'·f and, for the gates,
    dc'·g·i(1 − i), dc'·c_prev·f(1 − f), dh·t·o(1 − o), dc'·i·(1 − g²).
    """

    exact_bottoms = 3
    exact_tops = 2
    backward_reads = "tops"

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        c, x, cont = (tuple(s) for s in bottom_shapes)
        n = c[1] if len(c) > 1 else None
        for k, s in enumerate((c, x, cont)):
            axes = 2 if k == 2 else 3
            self.check(len(s) == axes, f"bottom[{k}] must have {axes} axes, its shape is {s}")
            self.check(s[0] == 1, f"bottom[{k}] must hold a single timestep (shape[0] == 1), "
                       f"its shape is {s}")
            self.check(s[1] == n, f"bottom[{k}] has {s[1]} streams, bottom[0] has {n}")
        self.check(x[2] == 4 * c[2], f"bottom[1] must have 4×{c[2]} = {4 * c[2]} gate inputs "
                   f"per stream, it has {x[2]}")
        return [c, c]

    def forward(self, c_prev: torch.Tensor, x: torch.Tensor, cont: torch.Tensor) -> Tops:
        n, hdim = c_prev.shape[1], c_prev.shape[2]
        ct = cont.detach().to(x.dtype).reshape(n, 1)
        c, h = _LSTMCell.apply(c_prev.reshape(n, hdim), x.reshape(n, 4 * hdim), ct)
        return c.unsqueeze(0), h.unsqueeze(0)

    def backward_from_blobs(self, bottoms: list[torch.Tensor], tops: list[torch.Tensor],
                            top_diffs: list[torch.Tensor], need: list[bool]) -> list:
        c_prev, x, cont = bottoms
        n, hdim = c_prev.shape[1], c_prev.shape[2]
        c_prev, x = c_prev.reshape(n, hdim), x.reshape(n, 4 * hdim)
        ct = cont.reshape(n, 1).to(x.dtype)
        i, f, o = (torch.sigmoid(x[:, k * hdim:(k + 1) * hdim]) for k in range(3))
        f = torch.where(ct == 0, torch.zeros_like(f), ct * f)
        g = torch.tanh(x[:, 3 * hdim:])
        t = torch.tanh(tops[0].reshape(n, hdim))
        dc, dh = (d.reshape(n, hdim) for d in top_diffs)
        term = dc + dh * o * (1 - t * t)
        dx = torch.cat([term * g * i * (1 - i), term * c_prev * f * (1 - f),
                        dh * t * o * (1 - o), term * i * (1 - g * g)], dim=1)
        return [(term * f).reshape(bottoms[0].shape), dx.reshape(bottoms[1].shape), None]
