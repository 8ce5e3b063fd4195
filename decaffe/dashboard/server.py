"""Serving the dashboard: binding, the token, and running uvicorn in this thread or beside
training in another.

Bound to a loopback address (127.0.0.1 by default) the dashboard is for this machine's user
and needs nothing more. Bound to any other address, anyone who can reach the machine could
read the runs, so a random token is made: it is printed once, in the URL, and every request
without it is refused.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading

import uvicorn

from ..errors import DecaffeError
from .app import Dashboard
from .sources import Source

DEFAULT_PORT = 8008


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_address(text: str, flag: str = "dashboard") -> tuple[str, int]:
    """'[HOST:]PORT' -> (host, port); the host defaults to 127.0.0.1. Raises DecaffeError."""
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise DecaffeError(f"-{flag}: expected [HOST:]PORT, not '{text}'") from None
    if not 0 <= port <= 65535:
        raise DecaffeError(f"-{flag}: port {port} is out of range (0 to 65535)")
    return host, port


class Server:
    """A dashboard bound to host:port (port 0: any free port). The socket is bound here, so
    that a port in use is an error at once; `url` is the address to open (with the token
    when there is one)."""

    def __init__(self, sources: list[Source], host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, token: str | None = None,
                 poll_interval: float = 0.5) -> None:
        self.host = host
        self.loopback = is_loopback(host)
        self.token = None if self.loopback else (token or secrets.token_urlsafe(18))
        self.dashboard = Dashboard(sources, token=self.token, loopback=self.loopback,
                                   poll_interval=poll_interval)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as e:
            self.sock.close()
            raise DecaffeError(f"cannot serve the dashboard on {host}:{port}: "
                               f"{e.strerror}") from None
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(self.dashboard, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        shown = self.host
        if self.loopback and shown in ("::1",):
            shown = "[::1]"
        elif shown in ("0.0.0.0", "::"):
            shown = socket.gethostname()
        elif ":" in shown:
            shown = f"[{shown}]"
        base = f"http://{shown}:{self.port}/"
        return base + (f"?token={self.token}" if self.token else "")

    def announce(self) -> list[str]:
        """The lines to print when it starts: the URL, and for a token what it is for."""
        if self.token is None:
            return [f"Dashboard: {self.url}"]
        return [f"Dashboard: {self.url}",
                f"Dashboard: bound to {self.host}, which other machines can reach, so it "
                "answers only requests that carry this token (printed only here)"]

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C)."""
        self._server.run(sockets=[self.sock])

    def start(self) -> Server:
        """Serve from a daemon thread (beside training)."""
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]},
                                        name="decaffe-dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.dashboard.closing = True
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.sock.close()
