"""What the dashboard's server costs the machine it shares with training: the CPU time of a
`decaffe dashboard` process serving one run folder that grows as a training run writes it,
to several clients reading its event stream, as a share of one core.

    python benchmarks/bench_dashboard_cpu.py [--seconds 30] [--clients 2] [--rate 50]
                                             [--channels 64]

A writer thread appends `rate` train records a second to events.jsonl, and every 4th
iteration a bn sample (3 layers of `channels` channels) and a params sample, flushed per line
as the recorder does; `clients` threads read /api/stream. After a warm-up, the server
process's user+system CPU time over `seconds` is read from /proc. Beside training
(`decaffe train -dashboard`) the server is a thread of the training process, so this share
of a core bounds what it takes from the training step, whatever the machine's load does to
step-time comparisons (benchmarks/bench_dashboard.py measures those).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def records(it: int, channels: int) -> list[dict]:
    out = [{"kind": "train", "iter": it, "time": it * 0.02, "loss": 1.0 / (1 + it),
            "lr": 0.01, "outputs": {"loss": 1.0 / (1 + it)}, "images_per_s": 3200.0}]
    if it % 4 == 0:
        vec = [0.5 + 0.001 * k for k in range(channels)]
        layer = {"channels": channels, "mean": vec, "var": vec, "factor": 1.0,
                 "batch_mean": vec, "batch_var": vec, "gamma": vec, "beta": vec}
        out.append({"kind": "bn", "iter": it, "time": it * 0.02,
                    "layers": {f"bn{i}": layer for i in range(3)}})
        out.append({"kind": "params", "iter": it, "time": it * 0.02, "layers": {
            "conv1": {"param": [{"shape": [16, 1, 3, 3], "weight_norm": 1.0,
                                 "grad_norm": 0.1, "update_ratio": 1e-3}]}}})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rate", type=float, default=50, help="train records a second")
    ap.add_argument("--channels", type=int, default=64)
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp()
    run = os.path.join(tmp, "live.run")
    os.makedirs(run)
    with open(os.path.join(run, "meta.json"), "w") as f:
        json.dump({"format": "decaffe-run", "version": 1, "name": "live", "max_iter": 10 ** 6},
                  f)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "decaffe", "dashboard", run, "-port",
                             str(port)], stdout=subprocess.PIPE, text=True, env=env)
    while "Dashboard:" not in proc.stdout.readline():
        pass
    stop = threading.Event()

    def writer():
        it = 0
        with open(os.path.join(run, "events.jsonl"), "a") as f:
            while not stop.is_set():
                it += 1
                for rec in records(it, args.channels):
                    f.write(json.dumps(rec) + "\n")
                f.flush()
                time.sleep(1 / args.rate)

    def client():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stream", timeout=60) as r:
                while not stop.is_set() and r.read(4096):
                    pass
        except (OSError, http.client.HTTPException):
            pass  # the server is stopped at the end while the clients still read

    threads = [threading.Thread(target=writer, daemon=True)]
    threads += [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for t in threads:
        t.start()

    def cpu() -> float:
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    time.sleep(3)  # warm-up: the clients' first init
    c0, w0 = cpu(), time.monotonic()
    time.sleep(args.seconds)
    c1, w1 = cpu(), time.monotonic()
    stop.set()
    proc.kill()
    proc.wait()
    shutil.rmtree(tmp, ignore_errors=True)
    share = (c1 - c0) / (w1 - w0)
    print(f"dashboard server: {c1 - c0:.2f} CPU s in {w1 - w0:.1f} s = {share:.2%} of one core "
          f"({args.clients} clients, {args.rate:g} train records/s, bn and params samples "
          f"every 4th iteration, 3 BN layers x {args.channels} channels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
