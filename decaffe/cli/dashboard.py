"""`decaffe dashboard PATH... [-host H] [-port N]`: serve a live page over run folders and
training logs.

Each PATH is a run folder (`{snapshot_prefix}.run/`, written by `decaffe train`), a training
log in Caffe's format (the original `caffe train`'s or decaffe's), or a folder holding them
(its `*.run/` folders and `*.log` files). All are shown on one page, several runs on one
chart, and followed as they grow. Bound to 127.0.0.1 unless -host names another address;
then it needs the token it prints in its URL. Ctrl-C stops it.
"""

from __future__ import annotations

from .. import dashboard
from .flags import FlagParser


def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Serve a live page over training runs: run folders "
                    "(SNAPSHOT_PREFIX.run/) and Caffe training logs.")
    fp.add_argument("paths", nargs="+", metavar="PATH",
                    help="a run folder, a training log, or a folder holding them")
    fp.flag("host", default="127.0.0.1", help="the address to serve on; any address but "
            "loopback needs the printed token")
    fp.flag("port", type=int, default=8008, help="the port to serve on (0: any free port)")
    args = fp.parse(argv[1:])
    dashboard.require()
    # Starlette and uvicorn come with the optional `dashboard` extra, checked just above
    from ..dashboard.server import Server
    from ..dashboard.sources import discover

    sources = discover(args.paths)
    server = Server(sources, args.host, args.port)
    runs = ", ".join(s.name for s in sources)
    print(f"Serving {len(sources)} run{'s' if len(sources) != 1 else ''} ({runs})", flush=True)
    for line in server.announce():
        print(line, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
