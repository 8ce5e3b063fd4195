"""`decaffe parse_log LOG OUTDIR` and `decaffe plot_log LOG OUT.png`: Caffe's training-log
tools.

parse_log reads a log in Caffe's glog format (Caffe's own or decaffe's) as Caffe's
tools/extra/parse_log.py does and writes two CSV tables into OUTDIR, named after the log
file with `.train` and `.test` appended: one row per iteration that printed outputs, with
columns NumIters, Seconds (since the "Solving" line), LearningRate (the last "lr = " seen)
and one column per output ("Train net output #k: NAME = x" / "Test net output #k: NAME =
x"). The first row's learning rate, printed only after it, is copied from the second row.
Lines that are not glog lines (a progress bar, a Python traceback) are skipped instead of
ending the parse.

plot_log draws loss, accuracy and learning-rate curves from the same tables with
matplotlib into one image. The loss panel has a logarithmic axis by default (a loss falls
over orders of magnitude; on a linear axis everything after the first drop lies flat on
the floor); `-log_scale` names the panels drawn on a log axis (loss, accuracy, lr; `none`
for none). The learning rate not named there goes on a log axis when it spans more than a
factor of 20.
"""

from __future__ import annotations

import csv
import datetime
import math
import os
import re
from collections import OrderedDict
from collections.abc import Callable

from ..errors import DecaffeError, suggest
from ..logparse import ITERATION, LEARNING_RATE, TEST_OUTPUT, TRAIN_OUTPUT, line_time
from .flags import FlagParser

_ITERATION, _TRAIN_OUTPUT, _TEST_OUTPUT = ITERATION, TRAIN_OUTPUT, TEST_OUTPUT
_LEARNING_RATE = LEARNING_RATE


def parse_log(path: str) -> tuple[list[OrderedDict], list[OrderedDict]]:
    """(train rows, test rows) of a Caffe training log, as Caffe's parse_log.py builds them."""
    try:
        year = datetime.datetime.fromtimestamp(os.path.getctime(path)).year
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DecaffeError(f"cannot read log '{path}': {e.strerror}") from None
    start = None
    for line in lines:
        if "Solving" in line:
            start = line_time(line, year)
            if start is not None:
                break
    iteration = -1.0
    lr = float("nan")
    train_rows: list[OrderedDict] = []
    test_rows: list[OrderedDict] = []
    train_row = test_row = None
    for line in lines:
        when = line_time(line, year)
        if when is None:
            continue
        m = _ITERATION.search(line)
        if m:
            iteration = float(m.group(1))
        if iteration == -1:
            continue
        if start is None:
            start = when
        # a log that runs past New Year's Eve: the later dates belong to the next year
        if when < start - datetime.timedelta(days=1):
            when = when.replace(year=when.year + 1)
        seconds = (when - start).total_seconds()
        m = _LEARNING_RATE.search(line)
        if m:
            lr = float(m.group(1))
        train_row = _output_row(_TRAIN_OUTPUT, train_row, train_rows, line, iteration, seconds,
                                lr)
        test_row = _output_row(_TEST_OUTPUT, test_row, test_rows, line, iteration, seconds, lr)
    for rows in (train_rows, test_rows):
        if len(rows) > 1:
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
    return train_rows, test_rows


def _output_row(regex: re.Pattern[str], row: OrderedDict | None, rows: list[OrderedDict],
                line: str, iteration: float, seconds: float, lr: float) -> OrderedDict | None:
    m = regex.search(line)
    if m:
        if row is None or row["NumIters"] != iteration:
            if row is not None:
                rows.append(row)
            row = OrderedDict([("NumIters", iteration), ("Seconds", seconds),
                               ("LearningRate", lr)])
        row[m.group(2)] = float(m.group(3))
    if row is not None and rows and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return row


def write_csv(path: str, rows: list[OrderedDict], delimiter: str = ",") -> None:
    """One CSV table: a header from the first row's columns, then the rows."""
    with open(path, "w", newline="") as f:
        if not rows:
            return
        fields = list(rows[0].keys())
        for r in rows[1:]:
            fields.extend(k for k in r if k not in fields)
        writer = csv.DictWriter(f, fieldnames=fields, delimiter=delimiter,
                                lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)


def _parse_log_main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Parse a Caffe training log into two CSV files holding the "
                    "training and the testing information.")
    fp.add_argument("logfile_path", help="path to the log file")
    fp.add_argument("output_dir", help="directory in which to place the output CSV files")
    fp.flag("delimiter", default=",", help="column delimiter in the output files")
    fp.bool_flag("verbose", help="print the names of the files written")
    args = fp.parse(argv[1:])
    if not os.path.isdir(args.output_dir):
        raise DecaffeError(f"output directory '{args.output_dir}' does not exist")
    train, test = parse_log(args.logfile_path)
    base = os.path.basename(args.logfile_path)
    for suffix, rows in ((".train", train), (".test", test)):
        out = os.path.join(args.output_dir, base + suffix)
        write_csv(out, rows, args.delimiter)
        if args.verbose:
            print(f"Wrote {out}")
    return 0


# ----------------------------------------------------------------------------------------------
def _series(rows: list[OrderedDict], pick: Callable[[str], bool]) -> dict[str,
            tuple[list[float], list[float]]]:
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        for k, v in r.items():
            if k in ("NumIters", "Seconds", "LearningRate") or not pick(k):
                continue
            xs, ys = out.setdefault(k, ([], []))
            xs.append(r["NumIters"])
            ys.append(v)
    return out


PANELS = ("loss", "accuracy", "lr")


def parse_log_scale(flag: str) -> tuple[str, ...]:
    """-log_scale: panels separated by ',' (loss, accuracy, lr), or 'none'."""
    names = tuple(n.strip() for n in (flag or "").split(",") if n.strip())
    if names in ((), ("none",)):
        return ()
    for n in names:
        if n not in PANELS:
            raise DecaffeError(f"-log_scale: unknown panel '{n}'{suggest(n, PANELS)} (loss, "
                               "accuracy, lr, or none)")
    return names


def plot_log(path: str, out_png: str, log_scale: tuple[str, ...] | list[str] = ("loss",)
             ) -> list[str]:
    """Draw loss, accuracy and learning rate against iterations; returns the panels drawn.
    Panels named in `log_scale` ('loss', 'accuracy', 'lr') get a logarithmic y axis (values
    <= 0 are left out there; a panel with no positive value stays linear)."""
    import matplotlib  # matplotlib (a few hundred ms) only for plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib, only for plotting

    train, test = parse_log(path)
    if not train and not test:
        raise DecaffeError(f"{path}: no 'Train net output' or 'Test net output' lines found; "
                           "is this a Caffe training log (with display > 0)?")

    def is_acc(k: str) -> bool:
        return "acc" in k.lower()

    def is_loss(k: str) -> bool:
        return not is_acc(k)

    panels = []
    loss = [("train", _series(train, is_loss)), ("test", _series(test, is_loss))]
    acc = [("train", _series(train, is_acc)), ("test", _series(test, is_acc))]
    if any(s for _, s in loss):
        panels.append(("loss", loss))
    if any(s for _, s in acc):
        panels.append(("accuracy", acc))
    lr_points = [(r["NumIters"], r["LearningRate"]) for r in train or test
                 if not math.isnan(r["LearningRate"])]
    if lr_points:
        panels.append(("learning rate", None))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3 * len(panels)), squeeze=False,
                             sharex=True)
    for ax, (title, groups) in zip(axes[:, 0], panels):
        key = "lr" if groups is None else title
        if groups is None:
            xs, ys = zip(*lr_points)
            ax.plot(xs, ys, color="tab:green")
            values = list(ys)
            auto = all(y > 0 for y in ys) and max(ys) / min(ys) > 20
        else:
            values = []
            for phase, series in groups:
                for name, (xs, ys) in series.items():
                    style = "-" if phase == "train" else "o-"
                    ax.plot(xs, ys, style, label=f"{phase} {name}", markersize=3)
                    values.extend(ys)
            ax.legend(fontsize="small")
            auto = False
        if (key in log_scale and any(v > 0 for v in values)) or auto:
            ax.set_yscale("log", nonpositive="mask")
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("iterations")
    fig.suptitle(os.path.basename(path))
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return [t for t, _ in panels]


def _plot_log_main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Plot loss, accuracy and learning rate from a Caffe training log.")
    fp.add_argument("logfile_path", help="path to the log file")
    fp.add_argument("output", help="the image to write (.png, .pdf, .svg)")
    fp.flag("log_scale", default="loss", help="panels with a logarithmic y axis, separated "
            "by ',': loss, accuracy, lr, or none (the lr goes log by itself when it spans "
            "more than 20x)")
    args = fp.parse(argv[1:])
    scale = parse_log_scale(args.log_scale)
    panels = plot_log(args.logfile_path, args.output, scale)
    print(f"Wrote {args.output} ({', '.join(panels)})")
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "plot_log":
        return _plot_log_main(argv)
    return _parse_log_main(argv)
