"""ROIPooling and PSROIPooling, forward + backward, as R-CNN / R-FCN nets run them: decaffe's
layers against a vectorised reference written here, in the same run.

    python benchmarks/bench_roi.py [--rois 300] [--iters 5] [--threads 0] [--skip-reference]
                                   [--before DIR]

Input: one 40×40 feature map (a 640×640 image at stride 16, spatial_scale 1/16) and --rois
random boxes in image coordinates (sides 8 to 640 pixels). ROIPooling: 1024 channels, 7×7
bins. PSROIPooling (R-FCN's classification head): output_dim 21, group_size 7, so
21·7·7 = 1029 channels (1024 is not a multiple of 49). Each contender runs a forward and a
backward of the same top diff; decaffe's through a Net (as a user's net runs it), the
reference with PyTorch autograd. Their outputs and input gradients are compared first.

The reference computes each bin directly: it gathers a window of the largest bin's size at
every bin (masked to the bin's own cells) and reduces it (max, first maximum in row-major
order; or mean), over chunks of ROIs of similar sizes (sorted by bin size, each chunk
padded to its own largest bin) that bound its memory. Reported: median ms per
forward+backward of each, alternated (A B A B ...), and decaffe / reference.
Threads: decaffe's choice for the free cores (decaffe.threads.configure), or --threads N.

--before DIR times an older decaffe (a checkout at DIR) in the same run: a worker process
importing DIR's decaffe builds the same net and input and runs one forward+backward per
request, alternated with the others (its time is measured in the worker, so the requests
cost nothing); reported as decaffe/before.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import decaffe
from decaffe.threads import configure

SCALE = 1.0 / 16
FLT_MAX = float(np.finfo(np.float32).max)


def random_rois(count: int, seed: int = 0, image: int = 640) -> np.ndarray:
    rng = np.random.default_rng(seed)
    side = np.exp(rng.uniform(np.log(8), np.log(image), (count, 2)))
    x1 = rng.uniform(0, image - side[:, 0])
    y1 = rng.uniform(0, image - side[:, 1])
    return np.stack([np.zeros(count), x1, y1, x1 + side[:, 0], y1 + side[:, 1]],
                    1).astype(np.float32)


def c_round(v: torch.Tensor) -> torch.Tensor:
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


# ---- the reference ---------------------------------------------------------------------
def _windows(start: torch.Tensor, end: torch.Tensor, k: int):
    """Cells start + 0..k-1 of every bin (clamped in range), and which are inside [start, end)."""
    cells = start[..., None] + torch.arange(k)
    return cells.clamp_max(max(int(end.max()) - 1, 0)), cells < end[..., None]


def _chunks(kh: torch.Tensor, kw: torch.Tensor, per_cell: int, budget: int = 20_000_000):
    """ROIs in chunks of similar window sizes (sorted by window area), each chunk with its own
    largest window (kh, kw) and at most `budget` gathered elements."""
    order = torch.argsort(kh * kw)
    chunks, lo = [], 0
    while lo < len(order):
        hi = lo + 1
        while hi < len(order):
            wh, ww = int(kh[order[hi]]), int(kw[order[hi]])
            if (hi + 1 - lo) * per_cell * wh * ww > budget:
                break
            hi += 1
        idx = order[lo:hi]
        chunks.append((idx, max(int(kh[idx].max()), 1), max(int(kw[idx].max()), 1)))
        lo = hi
    return order, chunks


def reference_roi_pool(x: torch.Tensor, rois: torch.Tensor, ph: int, pw: int,
                       scale: float) -> torch.Tensor:
    """caffe-fast-rcnn's ROIPooling by direct windows (autograd gives the backward)."""
    n, c, height, width = x.shape
    f = torch.float32
    s = torch.tensor(scale, dtype=f)
    sw, sh, ew, eh = (c_round(rois[:, i].to(f) * s).long() for i in (1, 2, 3, 4))
    bh = (eh - sh + 1).clamp_min(1).to(f) / ph
    bw = (ew - sw + 1).clamp_min(1).to(f) / pw
    kp, kq = torch.arange(ph, dtype=f), torch.arange(pw, dtype=f)
    hs = (torch.floor(kp * bh[:, None]).long() + sh[:, None]).clamp(0, height)
    he = (torch.ceil((kp + 1) * bh[:, None]).long() + sh[:, None]).clamp(0, height)
    ws = (torch.floor(kq * bw[:, None]).long() + sw[:, None]).clamp(0, width)
    we = (torch.ceil((kq + 1) * bw[:, None]).long() + sw[:, None]).clamp(0, width)
    b = rois[:, 0].long()
    planes = x.reshape(n, c, height * width)
    dead = ((eh < sh) | (ew < sw))[:, None, None, None]
    order, chunks = _chunks((he - hs).amax(1), (we - ws).amax(1), c * ph * pw)
    out = []
    for idx, kh, kw in chunks:
        rows, rin = _windows(hs[idx], he[idx], kh)  # (r, PH, KH)
        cols, cin = _windows(ws[idx], we[idx], kw)  # (r, PW, KW)
        cell = rows[:, :, None, :, None] * width + cols[:, None, :, None, :]
        inside = rin[:, :, None, :, None] & cin[:, None, :, None, :]  # (r, PH, PW, KH, KW)
        r = len(idx)
        vals = torch.gather(planes[b[idx]], 2, cell.reshape(r, 1, -1).expand(r, c, -1))
        vals = vals.reshape(r, c, ph, pw, kh * kw)
        keep = inside.reshape(r, 1, ph, pw, kh * kw) & (vals > -FLT_MAX)
        vals = torch.where(keep, vals, torch.tensor(-math.inf))
        top = vals.max(dim=4).values
        empty = ~inside.reshape(r, 1, ph, pw, -1).any(4)
        top = torch.where(top == -math.inf, torch.tensor(-FLT_MAX), top)
        top = torch.where(empty, torch.zeros(()), top)
        out.append(torch.where(dead[idx], top.detach(), top))
    return torch.cat(out)[torch.argsort(order)]


def reference_psroi_pool(x: torch.Tensor, rois: torch.Tensor, dim: int, g: int,
                         scale: float) -> torch.Tensor:
    """caffe-rfcn's PSROIPooling by direct windows (autograd gives the backward)."""
    n, c, height, width = x.shape
    f = torch.float32
    s = torch.tensor(scale, dtype=f)
    sw, sh = c_round(rois[:, 1]).to(f) * s, c_round(rois[:, 2]).to(f) * s
    ew, eh = (c_round(rois[:, 3]) + 1).to(f) * s, (c_round(rois[:, 4]) + 1).to(f) * s
    bh, bw = (eh - sh).clamp_min(0.1) / g, (ew - sw).clamp_min(0.1) / g
    k = torch.arange(g, dtype=f)
    hs = torch.floor(k * bh[:, None] + sh[:, None]).clamp(0, height).long()
    he = torch.ceil((k + 1) * bh[:, None] + sh[:, None]).clamp(0, height).long()
    ws = torch.floor(k * bw[:, None] + sw[:, None]).clamp(0, width).long()
    we = torch.ceil((k + 1) * bw[:, None] + sw[:, None]).clamp(0, width).long()
    b = rois[:, 0].long()
    planes = x.reshape(n * c, height * width)
    chan = torch.arange(dim * g * g).reshape(dim, g, g)
    order, chunks = _chunks((he - hs).amax(1), (we - ws).amax(1), dim * g * g)
    out = []
    for idx, kh, kw in chunks:
        rows, rin = _windows(hs[idx], he[idx], kh)
        cols, cin = _windows(ws[idx], we[idx], kw)
        cell = rows[:, :, None, :, None] * width + cols[:, None, :, None, :]  # (r,G,G,KH,KW)
        inside = (rin[:, :, None, :, None] & cin[:, None, :, None, :]).reshape(-1, 1, g, g,
                                                                                kh * kw)
        plane = b[idx, None, None, None] * c + chan[None]  # (r, D, G, G)
        vals = planes[plane[..., None], cell.reshape(-1, 1, g, g, kh * kw)]
        area = inside.sum(4)
        total = torch.where(inside, vals, torch.zeros(())).sum(4)
        out.append(torch.where(area > 0, total / area.clamp_min(1), torch.zeros(())))
    return torch.cat(out)[torch.argsort(order)]


# ---- decaffe -----------------------------------------------------------------------------
def decaffe_net(kind: str, x_shape, rois_count: int) -> decaffe.Net:
    param = ("roi_pooling_param { pooled_h: 7 pooled_w: 7 spatial_scale: 0.0625 }"
             if kind == "ROIPooling" else
             "psroi_pooling_param { spatial_scale: 0.0625 output_dim: 21 group_size: 7 }")
    text = (f"force_backward: true\n"
            f"layer {{ name: 'x' type: 'Input' top: 'x' input_param {{ shape {{ "
            f"{' '.join(f'dim: {d}' for d in x_shape)} }} }} }}\n"
            f"layer {{ name: 'rois' type: 'Input' top: 'rois' input_param {{ shape {{ "
            f"dim: {rois_count} dim: 5 }} }} }}\n"
            f"layer {{ name: 'pool' type: '{kind}' bottom: 'x' bottom: 'rois' top: 'y' "
            f"{param} }}\n")
    return decaffe.Net(text, decaffe.TEST)


def problem(kind: str, rois_count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The input map, ROIs and top diff of one benchmark case."""
    channels = 1024 if kind == "ROIPooling" else 21 * 49
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, channels, 40, 40)).astype(np.float32)
    rois = random_rois(rois_count)
    top_shape = (rois_count, 1024, 7, 7) if kind == "ROIPooling" else (rois_count, 21, 7, 7)
    dy = rng.standard_normal(top_shape).astype(np.float32)
    return x, rois, dy


def decaffe_step(kind: str, rois_count: int):
    """A Net of the case and a function running its forward+backward."""
    x, rois, dy = problem(kind, rois_count)
    net = decaffe_net(kind, x.shape, rois_count)
    net.blobs["x"].data[...] = x
    net.blobs["rois"].data[...] = rois

    def run():
        net.forward()
        net.blobs["y"].diff[...] = dy
        net.backward()

    return net, run


class Before:
    """An older decaffe (the checkout at DIR) timing the same case in a worker process."""

    def __init__(self, root: str, kind: str, rois_count: int, threads: int,
                 reference: bool) -> None:
        env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", "--layers", kind,
             "--rois", str(rois_count), "--threads", str(threads)]
            + ([] if reference else ["--skip-reference"]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            cwd=os.path.abspath(root))
        self.where = self.proc.stdout.readline().strip()  # the decaffe it imported
        self.seconds: list[float] = []

    def __call__(self) -> None:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        self.seconds.append(float(self.proc.stdout.readline()))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def worker(kind: str, rois_count: int, reference: bool) -> int:
    """--worker: one timed forward+backward per 'run' line on stdin, seconds on stdout."""
    print(os.path.dirname(decaffe.__file__), flush=True)
    net, run = decaffe_step(kind, rois_count)
    if reference:  # the parent reads the top once to compare: the same net state here
        run()
        net.blobs["y"].data  # noqa: B018
    for _ in sys.stdin:
        t0 = time.perf_counter()
        run()
        print(time.perf_counter() - t0, flush=True)
    return 0


def bench(kind: str, rois_count: int, iters: int, reference: bool,
          before: Before | None = None) -> dict[str, float]:
    # the same alternating timer as the batch-items benchmark (this folder is on sys.path);
    # imported here: it puts this checkout first on sys.path, which --worker must not do
    from bench_batch_items import timed_interleaved

    x, rois, dy = problem(kind, rois_count)
    net, run_decaffe = decaffe_step(kind, rois_count)

    xt, rt, dyt = torch.from_numpy(x), torch.from_numpy(rois), torch.from_numpy(dy)

    def run_reference():
        xg = xt.clone().requires_grad_(True)
        if kind == "ROIPooling":
            y = reference_roi_pool(xg, rt, 7, 7, SCALE)
        else:
            y = reference_psroi_pool(xg, rt, 21, 7, SCALE)
        y.backward(dyt)
        return y.detach(), xg.grad

    fns = {"decaffe": run_decaffe}
    if reference:
        run_decaffe()
        y_ref, gx_ref = run_reference()
        np.testing.assert_allclose(net.blobs["y"].data, y_ref.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(net.blobs["x"].diff, gx_ref.numpy(), rtol=1e-4, atol=1e-4)
        fns["reference"] = run_reference
    if before is not None:
        fns["before"] = before
    t = timed_interleaved(fns, iters)[0]
    if before is not None:  # the worker's own time of each call (after its warm-up)
        t["before"] = statistics.median(before.seconds[1:])
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rois", type=int, default=300)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0: decaffe's choice (free cores)")
    ap.add_argument("--skip-reference", action="store_true",
                    help="time decaffe only (e.g. an older decaffe, for the speed-up)")
    ap.add_argument("--layers", default="ROIPooling,PSROIPooling")
    ap.add_argument("--before", metavar="DIR",
                    help="also time the decaffe of the checkout at DIR (decaffe/before)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configure(args.threads)
    if args.worker:
        return worker(args.layers, args.rois, not args.skip_reference)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.rois} ROIs "
          f"on a 40x40 map, 7x7 bins; forward+backward, median of {args.iters} (ms)")
    for kind in args.layers.split(","):
        before = (Before(args.before, kind, args.rois, args.threads, not args.skip_reference)
                  if args.before else None)
        before_where = before.where if before else None
        try:
            t = bench(kind, args.rois, args.iters, not args.skip_reference, before)
        finally:
            if before is not None:
                before.close()
        shape = "1x1024x40x40" if kind == "ROIPooling" else "1x1029x40x40 (21·7·7)"
        line = f"{kind:13s} {shape:24s} decaffe {t['decaffe'] * 1e3:9.1f}"
        if "reference" in t:
            line += (f"   reference {t['reference'] * 1e3:9.1f}   decaffe/reference "
                     f"{t['decaffe'] / t['reference']:.2f}")
        if "before" in t:
            line += (f"   before {t['before'] * 1e3:9.1f}   decaffe/before "
                     f"{t['decaffe'] / t['before']:.3f} ({t['before'] / t['decaffe']:.1f}x)")
        print(line, flush=True)
    if args.before:
        print(f"before: the decaffe in {before_where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
