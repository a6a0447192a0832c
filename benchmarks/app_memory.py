"""Server memory of the app as clinicians come one after another, each leaving its tab open.

Starts `streamlit run app.py` from the repository root, then for each of N BraTS cases opens a new
browser session (Playwright, Chromium), drops the four scans, runs the shipped model and waits for the
result. Prints the server's resident memory (RSS) and peak (HWM) after each session: RSS moves with
what the allocator returns to the system, so compare peaks and several runs. Needs ../shared/data/brats and Chromium (`make chromium`).

Usage: .venv/bin/python benchmarks/app_memory.py [N] [--port 8631]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "brats"
CASES = ("Brats18_CBICA_ABM_1", "Brats18_2013_11_1", "Brats18_TCIA01_201_1", "Brats18_CBICA_AOZ_1",
         "Brats18_TCIA10_628_1", "Brats18_TCIA02_606_1")


def server_memory_mb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return tuple(round(int(fields[key].split()[0]) / 1024) for key in ("VmRSS", "VmHWM"))


def start_app(port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the app did not start within 2 minutes")


def one_clinician(browser, url: str, case: str):
    """A new session that segments one case; returns its browser context, left open."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(600_000)
    page.goto(url)
    page.get_by_text("Drop four scans above").wait_for()
    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(
        [str(DATA / case / f"{case}_{m}.nii.gz") for m in ("flair", "t1", "t1ce", "t2")])
    page.get_by_text(f"Ready: {case}").wait_for()
    page.get_by_role("button", name="Run segmentation").click()
    page.get_by_text(f"{case} segmented by").wait_for()
    page.wait_for_timeout(2000)  # the result's pictures and tables
    return context


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", nargs="?", type=int, default=4)
    parser.add_argument("--port", type=int, default=8631)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    server = start_app(args.port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            held = []
            for i, case in enumerate(CASES[:args.n], 1):
                held.append(one_clinician(browser, f"http://127.0.0.1:{args.port}", case))
                now, peak = server_memory_mb(server.pid)
                print(f"{i} session(s) held ({case}): server RSS {now} MB, peak {peak} MB", flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
