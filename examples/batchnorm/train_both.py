"""Train the digits CNN with and without batch normalization, and compare.

    python examples/batchnorm/train_both.py [-dashboard [HOST:]PORT]

Four runs of Caffe's SGD solver (solver_plain.prototxt, solver_bn.prototxt) on the bundled
8x8 digits, read from LMDB by Data layers: the plain and the BN net at the solvers' base_lr,
then both again at a higher base_lr. Every run starts from the same seed. The test net is
scored every --test-every iterations (all 360 test images). Then the BN net trained at the
base rate is run at test time with global statistics (Caffe's TEST default) and with batch
statistics (use_global_stats: false), over test batches of several sizes, and folded with
decaffe.bn.fold.

Writes to --out (default examples/batchnorm/output/): bn_vs_plain.png (training loss and
test accuracy against iteration, all runs), results.md (the tables printed here),
results.json (every number), the solvers run, and the trained weights.

With -dashboard [HOST:]PORT each run is recorded as a run folder beside its weights
(cnn_<net>_lr<rate>.run/) and one page shows all four live (decaffe dashboard, from a thread;
it needs decaffe[dashboard]): losses and test accuracy on shared charts, and each run's
BatchNorm statistics. The solvers then also test every --test-every iterations themselves, so
that the page has the test accuracy (the whole test set each time: the numbers written are the
same). On a terminal the page stays up after training until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from google.protobuf import text_format  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import make_nets  # noqa: E402

import caffe  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=600, help="iterations per run")
    ap.add_argument("--test-every", type=int, default=20, help="test interval (iterations)")
    ap.add_argument("--high-lr", type=float, default=0.2, help="the higher base_lr")
    ap.add_argument("--target", type=float, default=0.93, help="target test accuracy")
    ap.add_argument("--out", default=os.path.join(HERE, "output"), help="output folder")
    ap.add_argument("-dashboard", "--dashboard", default="", metavar="[HOST:]PORT",
                    help="serve a live page of the four runs (needs decaffe[dashboard])")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for PyTorch (these nets are too small to gain from more, "
                    "and the numbers then do not depend on the machine's core count)")
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
class Progress:
    """One status line per run, redrawn in place on a terminal, every 100 iterations in a
    log."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def update(self, it: int, loss: float, acc: float) -> None:
        if not self.tty and it % 100 and it != self.total:
            return
        rate = it / max(time.perf_counter() - self.t0, 1e-9)
        line = (f"{self.label:<18} iter {it:>4}/{self.total}  loss {loss:8.4f}  "
                f"test acc {acc:6.2%}  {rate:6.1f} it/s")
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        if self.tty and it == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def snapshot_prefix(kind: str, lr: float, out: str) -> str:
    return os.path.relpath(os.path.join(out, f"cnn_{kind}_lr{lr:g}"), ROOT)


def write_solver(kind: str, lr: float, iters: int, out: str, test_every: int = 0) -> str:
    """The solver file for one run: solver_<kind>.prototxt with base_lr and max_iter set (and
    with test_every, the solver's own test interval, for the run folder's test scores)."""
    param = caffe_pb2.SolverParameter()
    with open(os.path.join(HERE, f"solver_{kind}.prototxt")) as f:
        text_format.Merge(f.read(), param)
    param.base_lr = lr
    param.max_iter = iters
    if test_every:
        param.test_interval = test_every
        param.test_initialization = True
    param.snapshot_prefix = snapshot_prefix(kind, lr, out)
    path = os.path.join(out, f"solver_{kind}_lr{lr:g}.prototxt")
    with open(path, "w") as f:
        f.write(text_format.MessageToString(param))
    return path


def test_accuracy(solver) -> float:
    """Mean accuracy of the test net over test_iter batches (the whole test set)."""
    net = solver.test_nets[0]
    n = solver.param.test_iter[0]
    return float(np.mean([float(net.forward()["accuracy"]) for _ in range(n)]))


def train(kind: str, lr: float, args) -> dict:
    """Run one solver; returns its loss and accuracy curves and timing."""
    from decaffe.solvers import NonFiniteLossError

    test_every = args.test_every if args.dashboard else 0
    solver = caffe.get_solver(write_solver(kind, lr, args.iters, args.out, test_every))
    recorder = solver.record_run() if args.dashboard else None  # PREFIX.run, for the page
    label = f"{kind} lr={lr:g}"
    progress = Progress(label, args.iters)
    losses, tests = [], [(0, test_accuracy(solver))]
    diverged = None
    t0 = time.perf_counter()
    for it in range(1, args.iters + 1):
        try:
            solver.step(1)
        except NonFiniteLossError:
            diverged = it
            losses.append(float("nan"))
            break
        losses.append(float(solver.net.blobs["loss"].data))
        if it % args.test_every == 0 or it == args.iters:
            tests.append((it, test_accuracy(solver)))
        progress.update(it, losses[-1], tests[-1][1])
    seconds = time.perf_counter() - t0
    if recorder is not None:
        recorder.close("nonfinite" if diverged is not None else "finished",
                       f"the loss became non-finite at iteration {diverged}"
                       if diverged is not None else None)
    if diverged is not None:
        sys.stderr.write(f"\n{label}: the loss became non-finite at iteration {diverged}\n")
    weights = os.path.join(args.out, f"cnn_{kind}_lr{lr:g}.caffemodel")
    solver.net.save(weights)
    reach = next((it for it, acc in tests if acc >= args.target), None)
    return {"net": kind, "base_lr": lr, "loss": losses, "test": tests, "seconds": seconds,
            "iterations": len(losses), "reach": reach, "final": tests[-1][1],
            "best": max(acc for _, acc in tests), "diverged": diverged, "weights": weights}


# ----------------------------------------------------------------------------------------------
# Train/test statistics
# ----------------------------------------------------------------------------------------------
def test_images() -> tuple[np.ndarray, np.ndarray]:
    """The test set as the Data layer delivers it: N×1×8×8 scaled by 1/255, and labels."""
    from decaffe.data.db import open_db

    images, labels = [], []
    with open_db(os.path.join(ROOT, make_nets.DATA, "digits_test_lmdb"), "lmdb") as db:
        for _, value in db.items():
            datum = caffe_pb2.Datum.FromString(value)
            images.append(caffe.io.datum_to_array(datum))
            labels.append(datum.label)
    return np.stack(images).astype(np.float32) / 255.0, np.array(labels)


def classify(net, images: np.ndarray, batch: int) -> np.ndarray:
    """Class probabilities of every image, fed to the deploy net `batch` at a time."""
    net.blobs["data"].reshape(batch, *images.shape[1:])
    net.reshape()
    out = []
    for i in range(0, len(images), batch):
        net.blobs["data"].data[...] = images[i:i + batch]
        out.append(net.forward()["prob"].copy())
    return np.concatenate(out)


def statistics_demo(weights: str, args) -> dict:
    """Test accuracy of the trained BN net with global and with batch statistics, over
    batches of several sizes and of two compositions; and how many predictions change when
    only the other images of each batch change."""
    batch_net = make_nets.cnn(True, None, 1, deploy=True, test_global_stats=False).to_proto()
    batch_path = os.path.join(args.out, "cnn_bn_deploy_batch_stats.prototxt")
    with open(batch_path, "w") as f:
        f.write(str(batch_net))
    nets = {
        "global": caffe.Net(os.path.join(HERE, "cnn_bn_deploy.prototxt"), caffe.TEST,
                            weights=weights),
        "batch": caffe.Net(batch_path, caffe.TEST, weights=weights),
    }
    images, labels = test_images()
    order = np.argsort(labels, kind="stable")
    rows, changed = [], {}
    for stats, net in nets.items():
        for batch in (120, 36, 10, 1):
            acc = float((classify(net, images, batch).argmax(1) == labels).mean())
            rows.append({"stats": stats, "batch": batch, "order": "stored", "accuracy": acc})
        # the same batch size, each batch now one or two digits: batch statistics per class
        stored = classify(net, images, 36)
        probs = np.empty_like(stored)
        probs[order] = classify(net, images[order], 36)
        acc = float((probs.argmax(1) == labels).mean())
        rows.append({"stats": stats, "batch": 36, "order": "sorted by label", "accuracy": acc})
        changed[stats] = {"predictions": int((probs.argmax(1) != stored.argmax(1)).sum()),
                          "max_prob_change": float(np.abs(probs - stored).max())}
    return {"rows": rows, "changed": changed}


def fold_demo(weights: str) -> dict:
    """decaffe.bn.fold on the trained deploy net: outputs before/after and forward time."""
    from decaffe.bn import compare, fold_result, time_forward

    net = caffe.Net(os.path.join(HERE, "cnn_bn_deploy.prototxt"), caffe.TEST, weights=weights)
    net.blobs["data"].reshape(120, 1, 8, 8)
    net.reshape()
    result = fold_result(net)
    folded = result.build()
    diff = compare(net, folded, seed=0, blobs="all")
    before, after = time_forward([net, folded], 50)
    return {"folded": len(result.folded), "kept": len(result.kept),
            "layers_before": len(net.layers), "layers_after": len(folded.layers),
            "max_rel_diff": max(diff.values()), "ms_before": before * 1e3,
            "ms_after": after * 1e3}


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def tables(runs: list[dict], stats: dict, fold: dict, args) -> str:
    t = args.target
    lines = [f"Training ({args.iters} iterations, batch {make_nets.TRAIN_BATCH}, test every "
             f"{args.test_every}; seed {SEED})", "",
             f"| net | base_lr | iterations to {t:.0%} test accuracy | final test accuracy "
             "| best | training time (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in runs:
        reach = str(r["reach"]) if r["reach"] is not None else "never"
        note = f" (loss non-finite at {r['diverged']})" if r["diverged"] else ""
        lines.append(f"| {'BN' if r['net'] == 'bn' else 'plain'} | {r['base_lr']:g} | "
                     f"{reach}{note} | {r['final']:.2%} | {r['best']:.2%} | "
                     f"{r['seconds']:.1f} |")
    lines += ["", "BN net (trained at the base rate) at test time:", "",
              "| statistics | test batch | batch contents | test accuracy |",
              "| --- | ---: | --- | ---: |"]
    names = {"global": "global (use_global_stats: true, TEST default)",
             "batch": "batch (use_global_stats: false)"}
    for row in stats["rows"]:
        lines.append(f"| {names[row['stats']]} | {row['batch']} | {row['order']} | "
                     f"{row['accuracy']:.2%} |")
    g, b = stats["changed"]["global"], stats["changed"]["batch"]
    lines += ["", "Same images, same batch size (36), only the batches' other images differ "
              "(stored order vs sorted by label): "
              f"with global statistics {g['predictions']} predictions change (largest "
              f"probability change {g['max_prob_change']:.2g}); with batch statistics "
              f"{b['predictions']} of 360 change (largest probability change "
              f"{b['max_prob_change']:.2g}).", "",
              f"decaffe.bn.fold on the BN deploy net: {fold['folded']} BatchNorm+Scale pairs "
              f"folded ({fold['layers_before']} -> {fold['layers_after']} layers), largest "
              f"relative difference {fold['max_rel_diff']:.2g}, forward of 120 images "
              f"{fold['ms_before']:.2f} ms -> {fold['ms_after']:.2f} ms."]
    return "\n".join(lines)


def plot(runs: list[dict], path: str, target: float) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"plain": dict(color="tab:red"), "bn": dict(color="tab:blue")}
    for r in runs:
        high = r["base_lr"] != runs[0]["base_lr"]
        style = dict(styles[r["net"]], linestyle="--" if high else "-")
        label = f"{'BN' if r['net'] == 'bn' else 'plain'}, base_lr {r['base_lr']:g}"
        loss = np.array(r["loss"], dtype=np.float64)
        k = 10  # a 10-iteration moving average: single batches are noisy
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid") if len(loss) >= k else loss
        ax1.plot(np.arange(len(smooth)) + len(loss) - len(smooth) + 1, smooth, label=label,
                 **style)
        its, accs = zip(*r["test"])
        ax2.plot(its, accs, label=label, marker=".", **style)
    ax1.set_yscale("log")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("training loss (10-iteration average)")
    ax1.set_title("Training loss")
    ax2.axhline(target, color="gray", linewidth=0.8, linestyle=":", label=f"target {target:.0%}")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("test accuracy")
    ax2.set_ylim(0, 1)
    ax2.set_title("Test accuracy (360 images)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


SEED = 1701


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    os.chdir(ROOT)  # the prototxts name their data relative to the repository root
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    from decaffe.data.digits import ensure_digits

    ensure_digits(make_nets.DATA)
    make_nets.write_nets()
    base = caffe_pb2.SolverParameter()
    with open(os.path.join(HERE, "solver_bn.prototxt")) as f:
        text_format.Merge(f.read(), base)
    global SEED
    SEED = base.random_seed
    server = start_dashboard(args, base.base_lr) if args.dashboard else None
    runs = []
    for lr in (base.base_lr, args.high_lr):
        for kind in ("plain", "bn"):
            runs.append(train(kind, lr, args))
    bn_base = next(r for r in runs if r["net"] == "bn" and r["base_lr"] == base.base_lr)
    stats = statistics_demo(bn_base["weights"], args)
    fold = fold_demo(bn_base["weights"])
    text = tables(runs, stats, fold, args)
    print(text)
    figure = os.path.join(args.out, "bn_vs_plain.png")
    plot(runs, figure, args.target)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"runs": runs, "statistics": stats, "fold": fold, "target": args.target,
                   "iters": args.iters, "seed": SEED}, f, indent=1)
    print(f"\nwrote {os.path.relpath(figure)}, results.md and results.json in "
          f"{os.path.relpath(args.out)} ({time.perf_counter() - started:.0f} s in all)")
    if server is not None:
        if sys.stdin.isatty():
            print(f"The dashboard stays up at {server.url} until Ctrl-C")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        else:  # no terminal to hold the page open: say so, and how to see the runs again
            folders = " ".join(snapshot_prefix(kind, lr, args.out) + ".run"
                               for lr in (base.base_lr, args.high_lr) for kind in ("plain", "bn"))
            print(f"The dashboard at {server.url} stops with this script (no terminal); "
                  f"to see the runs again: decaffe dashboard {folders}")
        server.stop()
    return 0


def start_dashboard(args, base_lr: float):
    """One page over the four runs' folders (each appears as its run starts)."""
    from decaffe import dashboard

    dashboard.require()
    # Starlette and uvicorn come with the optional `dashboard` extra, checked just above
    from decaffe.dashboard.server import Server, parse_address
    from decaffe.dashboard.sources import RunFolder

    host, port = parse_address(args.dashboard)
    folders = [RunFolder(snapshot_prefix(kind, lr, args.out) + ".run")
               for lr in (base_lr, args.high_lr) for kind in ("plain", "bn")]
    for folder in folders:  # a run folder left by an earlier run of the example is replaced
        if os.path.isdir(folder.path):
            shutil.rmtree(folder.path)
    server = Server(folders, host, port).start()
    for line in server.announce():
        print(line, flush=True)
    return server


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "1")  # the solvers' INFO log would drown the table
    sys.exit(main())
