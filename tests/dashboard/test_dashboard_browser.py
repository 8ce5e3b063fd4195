"""The dashboard in a real browser: headless Chromium (Debian's package, driven by Playwright)
opens the page of `decaffe train -dashboard` while the BN example's net trains, sees the
charts gain points and the BatchNorm panel list the net's BatchNorm layers with their
channels, and takes a screenshot that must not be blank.

.ci/run installs chromium; the test never runs `playwright install` (no browser download).
DECAFFE_DASHBOARD_SCREENSHOT=PATH also saves the screenshot there (docs/dashboard_bn.png is
made this way)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
from dash_fixtures import ROOT
from google.protobuf import text_format
from PIL import Image
from playwright.sync_api import sync_playwright

from decaffe.data.digits import ensure_digits
from decaffe.proto import caffe_pb2

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
EXAMPLE = os.path.join(ROOT, "examples", "batchnorm")


def bn_channels(net_path: str) -> dict[str, int]:
    """{BatchNorm layer: channels} of a net: the num_output of the layer feeding it."""
    net = caffe_pb2.NetParameter()
    with open(net_path) as f:
        text_format.Merge(f.read(), net)
    outputs: dict[str, int] = {}
    channels = {}
    for lp in net.layer:
        if lp.type == "BatchNorm":
            channels[lp.name] = outputs[lp.bottom[0]]
        elif lp.type == "Convolution":
            outputs[lp.top[0]] = lp.convolution_param.num_output
    return channels


def start_training(tmp_path) -> tuple[subprocess.Popen, str]:
    """`decaffe train -dashboard 0` on the BN example's solver, long enough to be watched
    while it runs; returns the process and the URL it printed."""
    # the example's nets read data/digits/ relative to where they run: the test's own copy,
    # so that no other test building the repository's copy at the same time can disturb it
    ensure_digits(str(tmp_path / "data" / "digits"))
    param = caffe_pb2.SolverParameter()
    with open(os.path.join(EXAMPLE, "solver_bn.prototxt")) as f:
        text_format.Merge(f.read(), param)
    param.train_net = os.path.join(EXAMPLE, "cnn_bn_train.prototxt")
    param.test_net[0] = os.path.join(EXAMPLE, "cnn_bn_test.prototxt")
    param.max_iter = 2000  # BatchNorm is sampled about 500 times a run: every 4 iterations
    param.display = 5
    param.test_interval = 40
    param.snapshot = 100
    param.snapshot_prefix = str(tmp_path / "cnn_bn")
    solver = tmp_path / "solver.prototxt"
    solver.write_text(text_format.MessageToString(param))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "decaffe", "train", "-solver", str(solver),
                             "-dashboard", "0", "-threads", "1"], cwd=str(tmp_path), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"\] Dashboard: (http://\S+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("decaffe train -dashboard printed no URL:\n" + "".join(lines))


def points(page, key: str) -> int:
    return int(page.get_attribute(f'[data-chart="{key}"]', "data-points") or 0)


def test_page_of_a_training_run_in_a_real_browser(tmp_path):
    assert os.path.exists(CHROMIUM), "chromium is not installed (apt-get install chromium)"
    proc, url = start_training(tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "?log=1&smooth=0.6")
            page.wait_for_function(
                "() => +(document.querySelector('[data-chart=\"loss\"]') || {dataset: {}})"
                ".dataset.points > 0", timeout=90_000)
            first = points(page, "loss")
            # training goes on: the same charts gain points without a reload
            page.wait_for_function(
                f"() => +document.querySelector('[data-chart=\"loss\"]').dataset.points > {first}",
                timeout=90_000)
            assert points(page, "loss") > first
            page.wait_for_selector('[data-chart="test:test net #0: accuracy"]', timeout=90_000)
            page.wait_for_selector("[data-bn-layer]", timeout=90_000)
            expected = bn_channels(os.path.join(EXAMPLE, "cnn_bn_train.prototxt"))
            shown = {e.get_attribute("data-bn-layer"): int(e.get_attribute("data-channels"))
                     for e in page.query_selector_all("[data-bn-layer]")}
            assert shown == expected and len(expected) == 3
            for layer, channels in expected.items():
                chart = f'[data-bn-layer="{layer}"] [data-chart="bn:{layer}:mean"]'
                assert int(page.get_attribute(chart, "data-points")) > 0
                assert int(page.get_attribute(chart, "data-series")) == channels  # one a channel
            assert page.query_selector_all("#net-graph g.layer.bn").__len__() == 3
            # several BatchNorm samples drawn (16 channels of the first layer, 5 samples each)
            page.wait_for_function(
                "() => +document.querySelector('[data-chart=\"bn:conv1_bn:mean\"]')"
                ".dataset.points >= 80", timeout=90_000)
            page.wait_for_selector("#snapshots code.resume", timeout=90_000)
            assert "-snapshot" in page.inner_text("#snapshots code.resume")
            assert "training" in page.inner_text("#summary")
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert errors == []
            browser.close()
    finally:
        proc.kill()
        proc.wait(30)
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[0] > 1000 and image.shape[1] == 1400
    # not blank: many colours (charts' lines), and far from one flat colour
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    assert colours > 200 and image.std() > 20
    keep = os.environ.get("DECAFFE_DASHBOARD_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_browser_sees_a_caffe_log_and_a_broken_run(tmp_path):
    from dash_fixtures import CAFFE_LOG, start_dashboard, write_run

    broken = write_run(str(tmp_path / "broken.run"), 40, end=False, extra_lines=["{oops"])
    with open(os.path.join(broken, "meta.json"), "w") as f:
        f.write('{"format": "decaffe-run", "ver')  # truncated
    proc, url, _ = start_dashboard([CAFFE_LOG, broken])
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url + "?run=caffe_cifar10_quick.log")  # its net and snapshots below
            page.wait_for_function("() => +(document.querySelector('[data-chart=\"loss\"]')"
                                   " || {dataset: {}}).dataset.points > 0", timeout=60_000)
            page.wait_for_function("() => +document.querySelector('[data-chart=\"loss\"]')"
                                   ".dataset.points > 41", timeout=60_000)
            assert points(page, "loss") == 41 + 5  # the log's and the broken run's
            assert points(page, "test:test net #0: accuracy") == 9 + 3
            assert len(page.query_selector_all("#net-graph g.layer")) == 13
            assert "cifar10_quick_iter_4000.solverstate.h5" in page.inner_text("#snapshots")
            # the broken run: what could be read, drawn, and its named errors, shown
            problems = page.inner_text("#problems")
            assert "broken: meta.json:1:" in problems and "not valid JSON" in problems
            assert "broken: events.jsonl:" in problems
            assert "broken" in page.inner_text("#summary")
            browser.close()
    finally:
        proc.kill()
        proc.wait(30)


def test_browser_with_the_token_of_a_non_local_dashboard(tmp_path):
    from dash_fixtures import write_run

    from decaffe.dashboard.server import Server
    from decaffe.dashboard.sources import RunFolder

    run = write_run(str(tmp_path / "net.run"), 60)
    server = Server([RunFolder(run)], "0.0.0.0", 0).start()  # fetched over loopback only
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            denied = page.goto(f"http://127.0.0.1:{server.port}/")
            assert denied.status == 403 and "token" in page.inner_text("body")
            page.goto(f"http://127.0.0.1:{server.port}/?token={server.token}")
            # the assets and the event stream come through with the token (cookie and query)
            page.wait_for_function("() => +(document.querySelector('[data-chart=\"loss\"]')"
                                   " || {dataset: {}}).dataset.points > 0", timeout=60_000)
            assert page.inner_text("#connection") == "live"
            assert len(page.query_selector_all("[data-bn-layer]")) == 2
            browser.close()
    finally:
        server.stop()
