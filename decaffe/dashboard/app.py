"""The dashboard's web application (ASGI, on Starlette): one page, its assets, and the runs'
data as JSON and as a stream of server-sent events.

Routes (GET and HEAD only; the dashboard changes nothing):

- `/`: the page (`static/index.html`);
- `/static/NAME`: the page's script, charting library and style, from the package;
- `/api/runs`: every run: kind, name, meta, net, errors, notes, record count;
- `/api/run/I/records?after=N`: run I's records from the N-th on, its errors and notes;
- `/api/run/I/file/NAME`: one of run I's files (a run folder's meta.json, net.json,
  solver.prototxt, train_net.prototxt, events.jsonl; a log: the log itself);
- `/api/stream`: server-sent events: `init` (every run), then `records` and `status` as the
  runs grow.

Everything else, and any path that leaves the given run folders and logs (`..`, absolute
paths, symbolic links that point outside), is a 404. With a token (a dashboard bound to an
address other than loopback), a request without it, as `?token=` or the cookie the page sets,
is refused (403). Bound to loopback, requests must name a loopback host (a page on another
site cannot reach the dashboard through a DNS name that resolves to 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from http.cookies import SimpleCookie
from importlib import resources
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from .sources import Source, dumps

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
COOKIE = "decaffe_dashboard_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never send it elsewhere
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Cache-Control": "no-store",
}


def load_static() -> dict[str, bytes]:
    """{file name: bytes} of the page's assets, read once from the package (a checkout's
    folder or an installed wheel's)."""
    out: dict[str, bytes] = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        name = entry.name
        if entry.is_file() and os.path.splitext(name)[1] in STATIC_TYPES:
            out[name] = entry.read_bytes()
    return out


def with_records(value: dict, records: list[str]) -> str:
    """`value` as JSON with a "records" list of records already in JSON (sent as they are,
    never parsed and encoded again)."""
    return dumps(value)[:-1] + ',"records":[' + ",".join(records) + "]}"


def _inside(path: str, root: str) -> bool:
    """Whether `path`, links resolved, lies within `root` (itself resolved)."""
    real = os.path.realpath(path)
    base = os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


class Dashboard:
    """The runs served and the settings of one dashboard; `asgi()` is its application."""

    def __init__(self, sources: list[Source], token: str | None = None,
                 loopback: bool = True, poll_interval: float = 0.5,
                 heartbeat: float = 15.0) -> None:
        self.sources = sources
        self.token = token
        self.loopback = loopback
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat
        self.static = load_static()
        self.streams = 0  # open event streams (a test checks they end with their client)
        # set when the server stops: open streams end at their next poll instead of being
        # cancelled by uvicorn's graceful-shutdown timeout (which logs a traceback)
        self.closing = False
        routes = [
            Route("/", self.page, methods=["GET", "HEAD"]),
            Route("/static/{name}", self.asset, methods=["GET", "HEAD"]),
            Route("/api/runs", self.runs, methods=["GET", "HEAD"]),
            Route("/api/run/{run}/records", self.records, methods=["GET", "HEAD"]),
            Route("/api/run/{run}/file/{name:path}", self.file, methods=["GET", "HEAD"]),
            Route("/api/stream", self.stream, methods=["GET"]),
        ]
        self.app = Starlette(routes=routes, exception_handlers={
            404: self._not_found, 405: self._not_allowed, 500: self._failed})

    # ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The guard in front of every request: method, host, token."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        refuse = self._refusal(scope, headers)
        if refuse is not None:
            return await refuse(scope, receive, send)
        set_cookie = None
        if self.token:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if query.get("token", [""])[0] == self.token:
                set_cookie = (f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items()]
                if set_cookie:
                    extra.append((b"set-cookie", set_cookie.encode()))
                message = dict(message, headers=list(message.get("headers", [])) + extra)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> Response | None:
        if scope["method"] not in ("GET", "HEAD"):
            return PlainTextResponse("the dashboard is read-only\n", status_code=405,
                                     headers=dict(_HEADERS, Allow="GET, HEAD"))
        if self.loopback:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in LOOPBACK_HOSTS:
                return PlainTextResponse("this dashboard answers only to 127.0.0.1 and "
                                         "localhost\n", status_code=403, headers=_HEADERS)
        if self.token and not self._has_token(scope, headers):
            return PlainTextResponse("this dashboard needs its token: open the URL it printed "
                                     "when it started (…/?token=…)\n", status_code=403,
                                     headers=_HEADERS)
        return None

    def _has_token(self, scope: Scope, headers: dict[str, str]) -> bool:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [""])[0]
        if not given and "cookie" in headers:
            morsel = SimpleCookie(headers["cookie"]).get(COOKIE)
            given = morsel.value if morsel else ""
        return bool(given) and secrets.compare_digest(given.encode(), self.token.encode())

    # ------------------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        return Response(self.static["index.html"], media_type=STATIC_TYPES[".html"])

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = self.static.get(name)  # only the package's own files, by exact name
        if body is None:
            return self._missing(f"no asset '{name}'")
        return Response(body, media_type=STATIC_TYPES[os.path.splitext(name)[1]])

    def _source(self, request: Request) -> Source | None:
        text = request.path_params["run"]
        if not text.isdigit() or int(text) >= len(self.sources):
            return None
        return self.sources[int(text)]

    async def runs(self, request: Request) -> Response:
        out = []
        for i, s in enumerate(self.sources):
            await asyncio.to_thread(s.refresh)
            out.append(dict(s.status(), id=i, records=len(s.records)))
        return Response(dumps({"runs": out}), media_type="application/json")

    async def records(self, request: Request) -> Response:
        s = self._source(request)
        if s is None:
            return self._missing("no such run")
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return PlainTextResponse("after: expected a record number\n", status_code=400)
        await asyncio.to_thread(s.refresh)
        after = max(after, 0)
        body = with_records({"run": self.sources.index(s), "after": after, "errors": s.errors,
                             "notes": s.notes}, s.records[after:])
        return Response(body, media_type="application/json")

    async def file(self, request: Request) -> Response:
        s = self._source(request)
        name = request.path_params["name"]
        if s is None:
            return self._missing("no such run")
        allowed = s.files()
        path = allowed.get(name)  # exact names only: no '..', no absolute path gets through
        if path is None or not _inside(path, os.path.dirname(path) if s.kind == "log"
                                       else s.path):
            return self._missing(f"no file '{name}' in this run")
        if not os.path.isfile(path):
            return self._missing(f"'{name}' is not written yet")
        try:
            body = await asyncio.to_thread(_read_bytes, path)
        except OSError as e:
            return self._missing(f"'{name}': {e.strerror}")
        return Response(body, media_type="text/plain; charset=utf-8")

    async def stream(self, request: Request) -> Response:
        return StreamingResponse(self._events(request), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    async def _events(self, request: Request):
        """init, then records/status as the runs grow; ends when the client goes away."""
        self.streams += 1
        n = len(self.sources)
        sent, versions, generations = [0] * n, [-1] * n, [0] * n

        def init() -> str:
            runs = []
            for i, s in enumerate(self.sources):
                sent[i], versions[i], generations[i] = len(s.records), s.version, s.generation
                runs.append(with_records(dict(s.status(), id=i), s.records[:sent[i]]))
            return f"event: init\ndata: {{\"runs\":[{','.join(runs)}]}}\n\n"

        try:
            for s in self.sources:
                await asyncio.to_thread(s.refresh)
            yield init()
            quiet = 0.0
            while True:
                await asyncio.sleep(self.poll_interval)
                if self.closing or await request.is_disconnected():
                    return
                quiet += self.poll_interval
                for s in self.sources:
                    await asyncio.to_thread(s.refresh)
                if any(s.generation != g for s, g in zip(self.sources, generations)):
                    yield init()  # a file started again: the page starts again too
                    quiet = 0.0
                    continue
                for i, s in enumerate(self.sources):
                    if s.version != versions[i]:
                        versions[i] = s.version
                        yield f"event: status\ndata: {dumps(dict(s.status(), id=i))}\n\n"
                        quiet = 0.0
                    if len(s.records) > sent[i]:
                        new = s.records[sent[i]:]
                        sent[i] += len(new)
                        yield f"event: records\ndata: {with_records({'run': i}, new)}\n\n"
                        quiet = 0.0
                if quiet >= self.heartbeat:
                    quiet = 0.0
                    yield ": ping\n\n"  # keeps proxies from closing an idle stream
        finally:
            self.streams -= 1

    # ------------------------------------------------------------------------------------
    def _missing(self, why: str) -> Response:
        return PlainTextResponse(f"404 not found: {why}\n", status_code=404)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return self._missing(request.url.path)

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return PlainTextResponse("the dashboard is read-only\n", status_code=405)

    async def _failed(self, request: Request, exc: Exception) -> Response:
        # a named error, never a stack trace
        return PlainTextResponse(f"dashboard error: {type(exc).__name__}: {exc}\n",
                                 status_code=500)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
