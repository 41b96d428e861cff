"""End to end in a real browser: JupyterLab, the 02-tune-thresholds notebook, a slider, the numbers.

Starts JupyterLab on a free localhost port (token disabled, its own settings and runtime folders in a
temporary directory), opens notebooks/02-tune-thresholds.ipynb in headless Chromium (Debian's package,
driven by Playwright; nothing is downloaded), runs all cells, drags the abc.a slider and checks that the
class counts the page shows become the ones the engine computes for the new threshold. A screenshot is
saved as test-artifacts/workbench.png.

This test fails, never skips, when Chromium or Playwright is missing: .ci/system-deps installs Chromium,
the test extra installs Playwright.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

import engine
from engine.run import apply_classifiers, summarize

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "02-tune-thresholds.ipynb"
PLAYBOOK = ROOT / "playbooks" / "high-value-care.yaml"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SETTINGS = {  # the lab's user settings for this run: every cell stays in the page, no news fetched
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def chromium() -> str:
    for candidate in (os.environ.get("TIERBOOK_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("Chromium is not installed: run .ci/system-deps (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a folder with a copy of the notebook (the lab saves notebooks) and the playbooks."""
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(NOTEBOOK, root / "notebooks" / NOTEBOOK.name)
    (root / "playbooks").symlink_to(ROOT / "playbooks", target_is_directory=True)
    settings = tmp_path / "settings"
    for rel, value in SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))
    port = free_port()
    env = {**os.environ, "JUPYTER_PLATFORM_DIRS": "1", "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "MPLBACKEND": "Agg"}
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.root_dir={root}", "--IdentityProvider.token=", "--ServerApp.password=",
         "--ServerApp.disable_check_xsrf=True", f"--LabApp.user_settings_dir={settings}",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabServerApp.open_browser=False",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.3)
        # Start the notebook's kernel through the REST API: the page attaches to this session
        # rather than asking which kernel to start.
        body = json.dumps({"path": f"notebooks/{NOTEBOOK.name}", "type": "notebook", "name": NOTEBOOK.name,
                           "kernel": {"name": "python3"}}).encode()
        request = urllib.request.Request(f"{url}/api/sessions", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).read()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def engine_counts(prepared, playbook, a: float) -> dict[str, int]:
    sels = playbook.with_params({"abc.a": a}).selections
    classes = summarize(apply_classifiers(prepared.customers, sels, as_of=prepared.as_of,
                                          registry=playbook.registry), sels)
    rows = classes.filter(pl.col("column") == "abc").select("label", "customers").iter_rows()
    return {label: n for label, n in rows}


def test_slider_moves_the_numbers_in_a_real_browser(lab):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    playbook = engine.load_playbook(PLAYBOOK)
    prepared = playbook.prepare()
    ARTIFACTS.mkdir(exist_ok=True)
    count = ".tierbook-count[data-column='abc'][data-label='{}']"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.set_default_timeout(45_000)
            page.goto(f"{lab}/lab/tree/notebooks/{NOTEBOOK.name}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            # the kernel is connected (running before it is would ask which kernel to start)
            expect(page.locator(".jp-StatusBar-Widget", has_text="Python 3 (ipykernel) | Idle").first).to_be_visible()
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
            try:  # should the lab still ask, take the notebook's kernel
                page.locator(".jp-Dialog .jp-mod-accept").click(timeout=1500)
            except PlaywrightTimeout:
                pass

            # the notebook leaves abc.a at the playbook's 0.8
            start = engine_counts(prepared, playbook, 0.8)
            for label, n in start.items():
                expect(page.locator(count.format(label))).to_have_attribute("data-value", str(n), timeout=60_000)
            expect(page.locator(".tierbook-workbench img").first).to_be_visible()

            # drag the abc.a slider's handle to the left, as a person would
            slider = page.locator(".tierbook-param-abc-a")
            slider.scroll_into_view_if_needed()
            handle = slider.locator(".noUi-handle")
            track = slider.locator(".noUi-target").bounding_box()
            box = handle.bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            target = track["x"] + track["width"] * (0.55 - 0.01) / (0.99 - 0.01)
            page.mouse.move(target, y, steps=12)
            page.mouse.up()
            readout = slider.locator(".widget-readout")
            expect(readout).not_to_have_text("0.80")
            value = round(float(readout.inner_text()), 2)
            assert 0.4 < value < 0.7, value

            moved = engine_counts(prepared, playbook, value)
            assert moved != start
            for label, n in moved.items():
                expect(page.locator(count.format(label))).to_have_attribute("data-value", str(n), timeout=20_000)
                assert page.locator(count.format(label)).inner_text() == f"{n:,}"
            try:  # fold the file browser away, for a wider notebook in the screenshot
                page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click(timeout=2000)
            except PlaywrightTimeout:
                pass
            page.locator(".tierbook-workbench").evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            page.screenshot(path=str(ARTIFACTS / "workbench.png"))
        finally:
            browser.close()
