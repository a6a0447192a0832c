"""End to end in a real browser: `streamlit run app.py`, Chromium driven by Playwright.

Uploads the four scans of a real BraTS case through the drop zone, runs the shipped model, and checks
that volumes in mL, the images, the ground-truth scores and the 3D view appear without an exception.
Screenshots go to test-artifacts/screenshots/ (or $BRAINSEG_SCREENSHOTS).
"""
from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats"
CASE = "Brats18_CBICA_ABM_1"
CHROMIUM = Path("/usr/bin/chromium")
# test-artifacts/ is ignored by git; BRAINSEG_SCREENSHOTS=docs/screenshots refreshes the README pictures
SHOTS = Path(os.environ.get("BRAINSEG_SCREENSHOTS", ROOT / "test-artifacts" / "screenshots"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start within 120 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield SimpleNamespace(url=url, pid=process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def shot(page, name: str, full_page: bool = False) -> Path:
    """A screenshot shrunk to a 256-colour PNG, small enough to commit."""
    from PIL import Image

    page.mouse.move(0, 0)  # no hover buttons in the picture
    raw = page.screenshot(full_page=full_page)
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    if image.width > 1200:
        image = image.resize((1200, round(image.height * 1200 / image.width)), Image.LANCZOS)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    # octree keeps small saturated patches (legend chips, labels) true to colour; median cut does not
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def peak_memory_mb(pid: int) -> float:
    """The server's peak resident memory (Linux), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def settle(page) -> None:
    """Wait until the script run has finished and the page has drawn its result."""
    page.wait_for_timeout(300)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=600_000)
    page.wait_for_timeout(500)


def scroll_to(page, text: str) -> None:
    """Put the heading ``text`` at the top of the window, for a screenshot of what follows it."""
    page.get_by_text(text, exact=True).first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)


def no_exception(page) -> None:
    assert page.get_by_test_id("stException").count() == 0
    body = page.inner_text("body")
    assert "Traceback" not in body and "failed unexpectedly" not in body, body[:2000]


@pytest.mark.timeout(1800)  # ~90 s on an idle 2-core machine; generous for a busy one
def test_upload_run_and_inspect_a_real_case(server, browser):
    folder = DATA / CASE
    if not folder.is_dir():
        pytest.skip(f"needs the real BraTS case {folder}")
    scans = [folder / f"{CASE}_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(600_000)
    page.goto(server.url)
    page.get_by_text("Drop four scans above").wait_for()
    page.get_by_role("button", name="Try the sample case").wait_for()  # widgets drawn, not placeholders
    page.get_by_text("Loaded: models/brainseg_default.pt").wait_for()  # the chosen checkpoint, loaded with its card
    settle(page)
    shot(page, "01_start")

    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files([str(p) for p in scans])
    page.get_by_text(f"Ready: {CASE}").wait_for()
    for scan in scans:
        assert page.get_by_text(scan.name, exact=True).count() >= 1
    no_exception(page)

    page.get_by_role("button", name="Run segmentation").click()
    page.get_by_text("segmented by brainseg_default").wait_for(timeout=600_000)
    settle(page)
    page.get_by_test_id("stMetricValue").nth(2).wait_for()
    values = page.get_by_test_id("stMetricValue").all_inner_texts()
    assert len(values) == 3 and all(v.strip().endswith("mL") for v in values), values
    body = page.inner_text("body")
    for region in ("WT volume", "TC volume", "ET volume"):
        assert region in body
    images = page.locator("[data-testid='stImage'] img")
    images.nth(5).wait_for()
    assert images.count() >= 6
    widths = images.evaluate_all("els => els.map(e => e.naturalWidth)")
    assert all(w >= 200 for w in widths[:6]), widths  # 240x240 slices, decoded by the browser
    no_exception(page)

    # a slider move redraws the slices from memory; it must not run the network again.
    # The first move also waits for the browser to finish drawing the page, so the second is timed.
    slider = page.get_by_role("slider", name="Slice (axial, 0-154)")
    for attempt in range(2):
        first = images.first.get_attribute("src")
        settle(page)
        slider.focus()
        started = time.perf_counter()
        page.keyboard.press("ArrowRight")
        page.wait_for_function("src => document.querySelector(\"[data-testid='stImage'] img\").src !== src", arg=first, timeout=600_000)
        seconds = time.perf_counter() - started
    run_seconds = float(re.search(r"segmented by brainseg_default in ([0-9.]+) s", page.inner_text("body")).group(1))
    print(f"slider move -> new slice on screen: {seconds * 1000:.0f} ms (the segmentation took {run_seconds:.1f} s)")
    assert seconds < run_seconds / 2  # relative, so a busy machine slows both alike
    settle(page)
    scroll_to(page, "Viewer")
    shot(page, "02_viewer")

    # the reference segmentation through the second drop zone: scores and an error overlay
    page.get_by_test_id("stFileUploaderDropzoneInput").nth(1).set_input_files(str(folder / f"{CASE}_seg.nii.gz"))
    page.get_by_text(f"Reference: {CASE}_seg.nii.gz").wait_for()
    page.get_by_text("WT errors on axial slice").wait_for()
    settle(page)
    no_exception(page)
    scroll_to(page, "Ground truth (optional)")
    shot(page, "03_ground_truth")

    page.get_by_text("Show the tumour in 3D").click()
    page.locator(".js-plotly-plot .legendtext", has_text="brain").wait_for()
    legend = page.locator(".js-plotly-plot .legendtext").evaluate_all("els => els.map(e => e.textContent)")
    assert {"brain", "WT", "TC", "ET"} <= set(legend), legend
    scroll_to(page, "3D view")
    settle(page)
    page.wait_for_timeout(2000)  # let WebGL draw before the picture
    no_exception(page)
    shot(page, "04_3d")
    peak = peak_memory_mb(server.pid)
    print(f"server peak memory with one 240x240x155 case: {peak:.0f} MB")
    assert peak < 2048  # Community Cloud gives about 2.7 GB

    # the downloads' label values follow a new case: the box must show what the files will hold (it once
    # kept showing the first case's choice while the sample's files held BraTS 2023+ values)
    box = page.get_by_role("combobox", name="Label values in downloads")
    assert box.input_value() == "BraTS 2018-2021 (ET = 4)"
    page.get_by_role("button", name="Try the sample case").click()
    settle(page)
    page.get_by_role("button", name="Run segmentation").click()
    page.get_by_text("BraTS-GLI-00001-000 segmented by brainseg_default").wait_for(timeout=600_000)
    settle(page)
    no_exception(page)
    assert box.input_value() == "BraTS 2023+ (ET = 3)"
