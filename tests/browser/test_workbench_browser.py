"""End to end in a real browser: JupyterLab, the 02-tune-thresholds notebook, a slider, the numbers, Save.

Starts JupyterLab on a free localhost port (token disabled, its own settings and runtime folders in a
temporary directory), opens notebooks/02-tune-thresholds.ipynb in headless Chromium (Debian's package,
driven by Playwright; nothing is downloaded) in a 1600 x 1000 window, runs all cells, and checks:

- the class counts the page shows, before and after dragging the abc.a slider, against counts worked out
  with plain pandas and Python from the playbook's CSV files (not by tierbook);
- the layout: the class sizes sit beside the controls, in the first screen, not below them;
- Save with a refused value: dragging abc.b below abc.a is refused (the slider goes back, the page says
  why), the "unsaved changes" marker shows, and Save writes exactly what the controls show.

A screenshot is saved as test-artifacts/workbench.png.

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
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
import yaml

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


def net_revenue_by_hand(playbook_path: Path) -> dict[str, Decimal]:
    """Every customer's net revenue (exact), from the playbook's CSV files with pandas, without tierbook.

    Transaction lines with a customer id, amount = quantity x unit price (returns negative); customers of
    the customer table without such lines have 0.
    """
    doc = yaml.safe_load(playbook_path.read_text())
    data = doc["data"]
    cols = data["map"]
    raw = pd.read_csv(playbook_path.parent / data["transactions"],
                      dtype={cols["customer_id"]: "string", cols["unit_price"]: "string"})
    raw = raw[raw[cols["customer_id"]].notna()]
    amount = raw[cols["unit_price"]].map(Decimal) * raw[cols["quantity"]].map(Decimal)
    net = {str(k): v for k, v in amount.groupby(raw[cols["customer_id"]]).sum().items()}
    known = pd.read_csv(playbook_path.parent / data["customers"], dtype="string")["customer_id"]
    return {**{str(c): Decimal(0) for c in known}, **net}


def abc_counts_by_hand(net: dict[str, Decimal], a: float, b: float = 0.95) -> dict[str, int]:
    """ABC by its definition: a customer's share is the revenue of every customer with at least theirs."""
    total = sum(net.values())
    positive = sorted((v for v in net.values() if v > 0), reverse=True)
    counts = {"A": 0, "B": 0, "C": 0}
    for v in net.values():
        share = Fraction(sum(w for w in positive if w >= v)) / Fraction(total) if v > 0 else None
        counts["C" if share is None else "A" if share <= Fraction(str(a)) else "B" if share <= Fraction(str(b))
               else "C"] += 1
    return counts


def test_slider_moves_the_numbers_in_a_real_browser(lab):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a shared machine starts kernels slowly
    net = net_revenue_by_hand(PLAYBOOK)
    assert len(net) == 270  # 250 customers with transactions, 20 from the customer table only
    ARTIFACTS.mkdir(exist_ok=True)
    count = ".tierbook-count[data-column='abc'][data-label='{}']"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(45_000)
            page.goto(f"{lab}/lab/tree/notebooks/{NOTEBOOK.name}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            # the kernel is connected (running before it is would ask which kernel to start)
            expect(page.locator(".jp-StatusBar-Widget", has_text="Python 3 (ipykernel) | Idle").first).to_be_visible(
                timeout=90_000)
            try:  # fold the file browser away: the notebook gets the window's width, as a user would do
                page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click(timeout=2000)
            except PlaywrightTimeout:
                pass
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
            try:  # should the lab still ask, take the notebook's kernel
                page.locator(".jp-Dialog .jp-mod-accept").click(timeout=1500)
            except PlaywrightTimeout:
                pass

            # the notebook leaves abc.a at the playbook's 0.8
            start = abc_counts_by_hand(net, 0.8)
            assert sum(start.values()) == 270
            for label, n in start.items():
                expect(page.locator(count.format(label))).to_have_attribute("data-value", str(n), timeout=60_000)
            expect(page.locator(".tierbook-workbench img").first).to_be_visible()
            # the notebook saved hv_min_r = 4 and set it back to 3: the controls differ from the file
            expect(page.locator(".tierbook-unsaved-marker")).to_have_text("● unsaved changes")

            # layout at 1600 x 1000: the class sizes sit beside the controls, at their top, in the first screen
            page.locator(".tierbook-workbench").evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            controls = page.locator(".tierbook-controls").bounding_box()
            summary = page.locator(".tierbook-summary-box").bounding_box()
            assert summary["x"] >= controls["x"] + controls["width"] - 1, (controls, summary)
            assert abs(summary["y"] - controls["y"]) < 60, (controls, summary)
            assert summary["y"] + 200 < 1000, summary  # the first class tables are on screen

            # drag the abc.a slider's handle to the left, as a person would
            drag(page, "abc-a", 0.55, 0.01, 0.99)
            readout = page.locator(".tierbook-param-abc-a .widget-readout")
            expect(readout).not_to_have_text("0.80")
            value = round(float(readout.inner_text()), 2)
            assert 0.4 < value < 0.7, value
            moved = abc_counts_by_hand(net, value)
            assert moved != start
            for label, n in moved.items():
                expect(page.locator(count.format(label))).to_have_attribute("data-value", str(n), timeout=20_000)
                assert page.locator(count.format(label)).inner_text() == f"{n:,}"

            # abc.b below abc.a is refused: the slider goes back to 0.95 and the page says why
            drag(page, "abc-b", 0.1, 0.02, 1.0)
            expect(page.locator(".tierbook-status .tierbook-error")).to_contain_text("must be below b")
            expect(page.locator(".tierbook-param-abc-b .widget-readout")).to_have_text("0.95")
            for label, n in moved.items():  # the numbers did not move
                expect(page.locator(count.format(label))).to_have_attribute("data-value", str(n))
            # Save writes what the controls show
            page.locator(".tierbook-save").click()
            status = page.locator(".tierbook-status .tierbook-saved")
            expect(status).to_contain_text("saved to")
            target = Path(status.inner_text().removeprefix("saved to").strip())
            saved = yaml.safe_load(target.read_text())["classifiers"]
            assert saved["abc"]["a"] == value and saved["abc"].get("b", 0.95) == 0.95, saved["abc"]
            assert saved["rfm"]["hv_min_r"] == 3  # the control's value, no longer the 4 saved before
            expect(page.locator(".tierbook-unsaved-marker")).to_have_count(0)
            expect(page.locator(".tierbook-diff-text")).to_contain_text(f"a: {value}")

            page.locator(".tierbook-workbench").evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            page.screenshot(path=str(ARTIFACTS / "workbench.png"))
        finally:
            browser.close()


def drag(page, param: str, to: float, low: float, high: float) -> None:
    """Drag a slider's handle to the position of value ``to`` (its range is ``low`` .. ``high``)."""
    slider = page.locator(f".tierbook-param-{param}")
    slider.scroll_into_view_if_needed()
    handle = slider.locator(".noUi-handle")
    track = slider.locator(".noUi-target").bounding_box()
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] * (to - low) / (high - low), y, steps=12)
    page.mouse.up()
