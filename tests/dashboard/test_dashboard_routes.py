"""The dashboard's routes: the page and assets, the runs' JSON, the event stream, and what it
refuses (writes, traversal, other hosts, requests without the token); malformed and truncated
run folders and logs show what could be read and a named error."""

from __future__ import annotations

import http.client
import json
import os
import time

import pytest
from dash_fixtures import CAFFE_LOG, write_run
from starlette.testclient import TestClient

from decaffe import dashboard
from decaffe.dashboard.app import COOKIE, Dashboard
from decaffe.dashboard.server import Server, is_loopback, parse_address
from decaffe.dashboard.sources import LogSource, RunFolder, discover
from decaffe.errors import DecaffeError


def client(sources, **kw) -> TestClient:
    return TestClient(Dashboard(sources, **kw), base_url="http://127.0.0.1")


@pytest.fixture
def runs(tmp_path):
    good = write_run(str(tmp_path / "good.run"), 100)
    return [RunFolder(good), LogSource(CAFFE_LOG)]


def raw_get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """A request with the path exactly as given (no client-side '..' normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", (headers or {}).get("Host", f"127.0.0.1:{port}"))
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


# ------------------------------------------------------------------------------------------
def test_page_and_assets_are_served_from_the_package(runs):
    c = client(runs)
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("static/app.js", "static/plot.js", "static/style.css"):
        assert asset in page.text
        r = c.get("/" + asset)
        assert r.status_code == 200 and len(r.content) > 1000, asset
    assert c.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    # offline: the page loads nothing from another site
    assert "http://" not in page.text and "https://" not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_runs_lists_a_run_folder_and_a_caffe_log(runs):
    data = client(runs).get("/api/runs").json()["runs"]
    run, log = data
    assert run["kind"] == "run" and run["name"] == "good" and run["errors"] == []
    assert run["meta"]["max_iter"] == 100 and run["records"] == len(
        [line for line in open(os.path.join(runs[0].path, "events.jsonl"))])
    assert [layer["name"] for layer in run["net"] if layer["type"] == "BatchNorm"] == \
        ["bn1", "bn2"]
    assert log["kind"] == "log" and log["meta"]["max_iter"] == 4000
    assert log["meta"]["batch_size"] == 100 and len(log["net"]) == 13


def test_records_after_n(runs):
    c = client(runs)
    everything = c.get("/api/run/0/records").json()["records"]
    later = c.get("/api/run/0/records?after=5").json()["records"]
    assert later == everything[5:]
    kinds = {r["kind"] for r in everything}
    assert kinds == {"train", "test", "bn", "params", "snapshot", "end"}
    log = c.get("/api/run/1/records").json()["records"]
    assert sum(r["kind"] == "test" for r in log) == 9
    assert c.get("/api/run/0/records?after=x").status_code == 400


def test_run_files_only_by_their_names(runs):
    c = client(runs)
    r = c.get("/api/run/0/file/solver.prototxt")
    assert r.status_code == 200 and "base_lr" in r.text
    assert c.get("/api/run/1/file/caffe_cifar10_quick.log").status_code == 200
    for bad in ("/api/run/0/file/other.txt", "/api/run/2/file/meta.json",
                "/api/run/x/records", "/api/run/-1/records", "/api/run/0/file/",
                "/static/nothing.js", "/nothing"):
        assert c.get(bad).status_code == 404, bad


def test_traversal_absolute_paths_and_symlinks_out_are_404(tmp_path, runs):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the dashboard")
    run = runs[0].path
    os.remove(os.path.join(run, "train_net.prototxt"))
    os.symlink(secret, os.path.join(run, "train_net.prototxt"))  # a link out of the run
    server = Server(runs, "127.0.0.1", 0).start()
    try:
        for path in ("/api/run/0/file/../../secret.txt", "/api/run/0/file/..%2f..%2fsecret.txt",
                     "/api/run/0/file/%2e%2e/%2e%2e/secret.txt", f"/api/run/0/file/{secret}",
                     f"/api/run/0/file/%2F{str(secret)[1:]}", "/static/../app.py",
                     "/static/..%2fapp.py", "/static/%2e%2e%2f__init__.py",
                     "/api/run/0/file/train_net.prototxt", "/../../etc/passwd",
                     "/api/run/1/file/../../data/caffe_cifar10_quick.log"):
            status, body = raw_get(server.port, path)
            assert status == 404, path
            assert b"not for the dashboard" not in body and b"def " not in body, path
        assert raw_get(server.port, "/api/run/0/file/solver.prototxt")[0] == 200
    finally:
        server.stop()


def test_read_only(runs):
    c = client(runs)
    for method in ("post", "put", "delete", "patch"):
        assert getattr(c, method)("/api/runs").status_code == 405, method
    assert c.head("/").status_code == 200


def test_other_host_names_refused_on_loopback(runs):
    c = client(runs)
    assert c.get("/", headers={"Host": "evil.example:8008"}).status_code == 403
    assert c.get("/", headers={"Host": "localhost:8008"}).status_code == 200


def test_non_local_address_needs_the_token(runs):
    c = TestClient(Dashboard(runs, token="s3cret", loopback=False),
                   base_url="http://203.0.113.9")
    for path in ("/", "/api/runs", "/static/app.js", "/api/stream"):
        r = c.get(path)
        assert r.status_code == 403 and "token" in r.text, path
    assert c.get("/?token=wrong").status_code == 403
    ok = c.get("/?token=s3cret")
    assert ok.status_code == 200 and COOKIE in ok.headers["set-cookie"]
    assert "HttpOnly" in ok.headers["set-cookie"]
    c.cookies.set(COOKIE, "s3cret")
    assert c.get("/api/runs").status_code == 200  # the page's later requests carry the cookie


def test_server_makes_a_token_for_any_other_address(runs):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    local = Server(runs, "127.0.0.1", 0)
    try:
        assert local.token is None and local.url == f"http://127.0.0.1:{local.port}/"
        assert len(local.announce()) == 1
    finally:
        local.stop()
    open_ = Server(runs, "0.0.0.0", 0)
    try:
        assert open_.token and len(open_.token) >= 20 and f"?token={open_.token}" in open_.url
        lines = open_.announce()
        assert open_.token in lines[0] and "token" in lines[1] and "0.0.0.0" in lines[1]
    finally:
        open_.stop()
    # served, it refuses requests without it (fetched over loopback)
    guarded = Server(runs, "0.0.0.0", 0).start()
    try:
        assert raw_get(guarded.port, "/api/runs")[0] == 403
        assert raw_get(guarded.port, f"/api/runs?token={guarded.token}")[0] == 200
    finally:
        guarded.stop()


def test_parse_address():
    assert parse_address("8008") == ("127.0.0.1", 8008)
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    with pytest.raises(DecaffeError, match="HOST:.PORT"):
        parse_address("x:y")
    with pytest.raises(DecaffeError, match="out of range"):
        parse_address("70000")


def test_port_in_use_is_a_named_error(runs):
    first = Server(runs, "127.0.0.1", 0)
    try:
        with pytest.raises(DecaffeError, match=f"127.0.0.1:{first.port}"):
            Server(runs, "127.0.0.1", first.port)
    finally:
        first.stop()


# ------------------------------------------------------------------------------------------
def test_malformed_run_folder_shows_what_it_read_and_named_errors(tmp_path):
    bad = [json.dumps({"kind": "train", "iter": 110, "time": 1.0, "loss": 0.5}),
           "{not json",
           json.dumps({"iter": 5}),
           json.dumps({"kind": "train", "iter": "seven"}),
           json.dumps({"kind": "future_kind", "iter": 1, "whatever": [1, 2]}),
           json.dumps({"kind": "train", "iter": 120, "time": 1.2, "loss": None,
                       "new_field": {"x": 1}})]
    folder = write_run(str(tmp_path / "bad.run"), 100, end=False, extra_lines=bad)
    with open(os.path.join(folder, "events.jsonl"), "a") as f:
        f.write('{"kind": "train", "iter": 13')  # killed mid-write
    with open(os.path.join(folder, "meta.json"), "w") as f:
        f.write('{"format": "decaffe-run", "version": 1, "max_iter"')  # truncated
    with open(os.path.join(folder, "net.json"), "w") as f:
        f.write('{"layers": [{"name": "a"}, 7]}')
    c = client([RunFolder(folder)])
    run = c.get("/api/runs").json()["runs"][0]
    errors = "\n".join(run["errors"])
    n_good = len(open(os.path.join(folder, "events.jsonl")).read().splitlines()) - 1 - 4
    assert run["records"] == n_good
    assert "meta.json:1:" in errors and "not valid JSON" in errors
    assert "net.json: layer #1 has no name" in errors
    assert "not valid JSON" in errors and "a record needs a 'kind'" in errors
    assert "without an integer 'iter'" in errors
    lines = open(os.path.join(folder, "events.jsonl")).read().splitlines()
    assert f"events.jsonl:{lines.index('{not json') + 1}:" in errors
    assert any("last line is incomplete" in n for n in run["notes"])
    assert [layer["name"] for layer in run["net"]] == ["a"]
    records = c.get("/api/run/0/records").json()["records"]
    assert records[-1]["iter"] == 120 and records[-1]["loss"] is None
    assert not any(r["kind"] == "future_kind" for r in records)
    assert c.get("/").status_code == 200


def test_empty_missing_and_foreign_folders(tmp_path):
    waiting = RunFolder(str(tmp_path / "later.run"))
    other = tmp_path / "other.run"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"format": "something-else", "version": 9}))
    c = client([waiting, RunFolder(str(other))])
    a, b = c.get("/api/runs").json()["runs"]
    assert a["records"] == 0 and any("waiting for" in n for n in a["notes"])
    assert any("format is 'something-else'" in e for e in b["errors"])
    assert any("version 9 is newer" in e for e in b["errors"])
    assert any("events.jsonl: not written yet" in n for n in b["notes"])


def test_truncated_and_garbage_logs(tmp_path):
    text = open(CAFFE_LOG).read()
    cut = tmp_path / "cut.log"
    cut.write_text(text[: text.index("Iteration 2000, loss") + 5])  # cut mid-line
    garbage = tmp_path / "garbage.log"
    garbage.write_bytes(bytes(range(256)) * 20 + b"\n")
    c = client([LogSource(str(cut)), LogSource(str(garbage))])
    cut_run, garbage_run = c.get("/api/runs").json()["runs"]
    records = c.get("/api/run/0/records").json()["records"]
    assert max(r["iter"] for r in records if r["kind"] == "train") == 1900
    assert cut_run["meta"]["max_iter"] == 4000
    assert garbage_run["records"] == 0
    assert any("no Caffe training lines" in n for n in garbage_run["notes"])


def test_a_log_that_grows_is_read_from_where_it_stopped(tmp_path):
    lines = open(CAFFE_LOG).read().splitlines(keepends=True)
    path = tmp_path / "growing.log"
    half = len(lines) * 7 // 8  # past the net set-up, into the training lines
    path.write_text("".join(lines[:half]))
    source = LogSource(str(path))
    source.refresh(0)
    first = len(source.records)
    with open(path, "a") as f:
        f.write("".join(lines[half:]))
    source.refresh(0)
    whole = LogSource(CAFFE_LOG)
    whole.refresh(0)
    whole_records = [json.loads(r) for r in whole.records] + whole._reader.flush()
    assert 0 < first < len(source.records)
    assert [json.loads(r) for r in source.records] == whole_records
    assert source._tail.offset == os.path.getsize(path)  # read once, not again per refresh


def test_discover(tmp_path):
    write_run(str(tmp_path / "a.run"))
    write_run(str(tmp_path / "b.run"))
    (tmp_path / "train.log").write_text(open(CAFFE_LOG).read())
    (tmp_path / "notes.txt").write_text("not a log")
    found = discover([str(tmp_path)])
    assert [(s.kind, s.name) for s in found] == [("run", "a"), ("run", "b"),
                                                   ("log", "train.log")]
    assert [s.name for s in discover([str(tmp_path / "a.run" / "events.jsonl")])] == ["a"]
    assert [s.kind for s in discover([str(tmp_path / "c.run")])] == ["run"]  # still to come
    with pytest.raises(DecaffeError, match="no such run folder or log"):
        discover([str(tmp_path / "missing")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DecaffeError, match="no run folders"):
        discover([str(empty)])


def test_missing_extra_names_it(monkeypatch, capsys):
    import importlib.util

    from decaffe.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(dashboard.MissingExtraError, match=r"pip install 'decaffe\[dashboard\]'"):
        dashboard.require()
    assert main(["dashboard", CAFFE_LOG]) == 1
    assert "pip install 'decaffe[dashboard]'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
def read_event(resp) -> tuple[str, dict | None]:
    """The next server-sent event (name, data) from a raw HTTP response."""
    name, data = "", []
    while True:
        line = resp.fp.readline().decode()
        if line == "":
            raise EOFError
        line = line.rstrip("\n")
        if line == "":
            if name or data:
                return name, json.loads("".join(data)) if data else None
            continue
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])


def open_stream(port: int):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", "/api/stream")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    return conn, resp


def wait_for(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_stream_pushes_new_records_and_ends_with_its_client(tmp_path):
    folder = write_run(str(tmp_path / "live.run"), 40, end=False)
    server = Server([RunFolder(folder)], "127.0.0.1", 0, poll_interval=0.05).start()
    dash = server.dashboard
    try:
        conn, resp = open_stream(server.port)
        name, init = read_event(resp)
        assert name == "init" and init["runs"][0]["name"] == "live"
        assert max(r["iter"] for r in init["runs"][0]["records"]) == 40
        with open(os.path.join(folder, "events.jsonl"), "a") as f:
            f.write(json.dumps({"kind": "train", "iter": 50, "time": 2.5, "loss": 0.3,
                                "lr": 0.01, "outputs": {}}) + "\n")
            f.write('{"kind": "train", "iter": 6')  # not yet complete: not sent
            f.flush()
            name, msg = read_event(resp)
            while name != "records":
                name, msg = read_event(resp)
            assert [r["iter"] for r in msg["records"]] == [50]
            f.write('0, "time": 3.0, "loss": 0.2}\n')
        name, msg = read_event(resp)
        while name != "records":
            name, msg = read_event(resp)
        assert [r["iter"] for r in msg["records"]] == [60]
        assert dash.streams == 1
        conn.sock.close()  # the client goes away mid-stream
        conn.close()
        assert wait_for(lambda: dash.streams == 0), "the stream outlived its client"
        # many tabs at once, all closed: nothing left running
        tabs = [open_stream(server.port) for _ in range(12)]
        for _, resp in tabs:
            assert read_event(resp)[0] == "init"
        assert dash.streams == 12
        for conn, _ in tabs:
            conn.sock.close()
            conn.close()
        assert wait_for(lambda: dash.streams == 0)
        assert raw_get(server.port, "/api/runs")[0] == 200  # and it still answers
    finally:
        server.stop()


def test_bn_and_params_samples_are_thinned_past_a_hundred(tmp_path):
    from dash_fixtures import bn, train

    folder = write_run(str(tmp_path / "long.run"), 0, end=False)
    with open(os.path.join(folder, "events.jsonl"), "a") as f:
        for it in range(1, 451):
            f.write(json.dumps(train(it)) + "\n")
            f.write(json.dumps(bn(it)) + "\n")
    source = RunFolder(folder)
    source.refresh(0)
    records = [json.loads(r) for r in source.records]
    kept = [r["iter"] for r in records if r["kind"] == "bn"]
    # iteration 0's sample, then 1..99 all, then every 2nd for 100 more, then every 4th
    assert kept[:100] == list(range(0, 100))
    assert kept[100:200] == list(range(100, 300, 2))
    assert kept[200:] == list(range(300, 451, 4))
    assert sum(r["kind"] == "train" for r in records) == 451  # the light records all kept
    assert any("every 4th" in n for n in source.notes)


def test_a_run_folder_written_again_starts_the_page_again(tmp_path):
    folder = write_run(str(tmp_path / "again.run"), 60, end=False)
    server = Server([RunFolder(folder)], "127.0.0.1", 0, poll_interval=0.05).start()
    try:
        conn, resp = open_stream(server.port)
        name, init = read_event(resp)
        before = len(init["runs"][0]["records"])
        # a fresh run in the same folder: events.jsonl written anew, shorter
        with open(os.path.join(folder, "events.jsonl"), "w") as f:
            f.write(json.dumps({"kind": "train", "iter": 0, "time": 0.0, "loss": 2.0}) + "\n")
        name, msg = read_event(resp)
        while name != "init":
            name, msg = read_event(resp)
        run = msg["runs"][0]
        assert before > 1 and [r["iter"] for r in run["records"]] == [0]
        assert any("read again from its start" in n for n in run["notes"])
        conn.close()
    finally:
        server.stop()


def test_records_reach_the_page_as_valid_json(tmp_path):
    folder = write_run(str(tmp_path / "odd.run"), 20, end=False, extra_lines=[
        '{"kind": "train", "iter": 30, "time": 1.5, "loss": NaN, "lr": Infinity}',
        '{"kind": "train", "iter": 40, "time": "late", "loss": 0.5}',
        '  {"kind": "train", "iter": 50, "time": 2.5, "loss": 0.4}  '])
    source = RunFolder(folder)
    source.refresh(0)
    last = source.records[-3:]
    assert last[2] == '{"kind": "train", "iter": 50, "time": 2.5, "loss": 0.4}'  # as written
    parsed = [json.loads(r, parse_constant=lambda c: pytest.fail(f"{c} sent")) for r in last]
    assert parsed[0]["loss"] is None and parsed[0]["lr"] is None
    assert parsed[1]["time"] is None


def test_stopping_the_server_ends_an_open_stream_without_cancelling_it(runs, capfd):
    server = Server(runs, "127.0.0.1", 0, poll_interval=0.05).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/api/stream", headers={"Host": "127.0.0.1"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read1(65536).startswith(b"event: init")
    start = time.time()
    server.stop()
    # the stream ended at its next poll: no graceful-shutdown timeout, no cancelled task
    assert time.time() - start < 1.5
    assert server.dashboard.streams == 0 or not server._thread.is_alive()
    conn.close()
    err = capfd.readouterr().err
    assert "CancelledError" not in err and "graceful shutdown exceeded" not in err
