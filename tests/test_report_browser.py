"""The report in a real browser: Debian's chromium, driven by Playwright (never a browser
Playwright downloads itself). Every image must load, no request may leave the file, the
headline table must be there; a full-page screenshot goes to test-artifacts/.

Skipped when chromium or Playwright is missing, unless AELAB_REQUIRE_BROWSER=1 (which
`make test`, and so CI, sets after installing chromium), where it fails instead.
"""

import os
import shutil
from pathlib import Path

import pytest

from aelab.cli import main

CHROMIUM = os.environ.get("AELAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_or_skip():
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the Python package playwright (pip install -e '.[dev]')")
        sync_playwright = None
    if not Path(CHROMIUM).exists():
        missing.append("chromium (apt-get install chromium, or `make browser`)")
    if missing:
        message = "needs " + " and ".join(missing)
        if os.environ.get("AELAB_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return sync_playwright


@pytest.fixture
def report_run(fake_fashion, tmp_path):
    """A reproduce run on the tiny fake data with two maps, so every section has content."""
    run = tmp_path / "run"
    assert main(["reproduce", "--data", str(fake_fashion), "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    assert main(["embed", "--run", str(run), "--method", "pca", "--no-progress"]) == 0
    assert main(["embed", "--run", str(run), "--baseline", "pca16", "--method", "tsne", "--no-progress"]) == 0
    return run


def test_report_in_headless_chromium(report_run, tmp_path):
    sync_playwright = _browser_or_skip()
    report = report_run / "report.html"
    requests, blocked = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(  # a fresh profile (--user-data-dir) per test
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1200, "height": 900})
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.on("request", lambda r: requests.append(r.url))

            def refuse_network(route):  # anything but the report file itself is recorded and refused
                if route.request.url != report.as_uri():
                    blocked.append(route.request.url)
                    return route.abort()
                return route.continue_()

            page.route("**/*", refuse_network)
            page.goto(report.as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => "
                                   "({alt: i.alt, complete: i.complete, width: i.naturalWidth, src: i.src.slice(0, 22)}))")
            headline_rows = page.locator("table.headline tbody tr").count()
            headings = page.locator("h2").all_inner_texts()
            maps_rows = page.locator("table.maps tbody tr").count()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()

    assert len(images) == 9, images  # samples, noisy, history, denoised, hardest, 2 maps x 2 figures
    broken = [i for i in images if not (i["complete"] and i["width"] > 0)]
    assert not broken, broken
    assert all(i["src"].startswith("data:image/png;base64") for i in images)
    assert not blocked, blocked
    assert all(u == report.as_uri() or u.startswith("data:") for u in requests), requests
    assert headline_rows == 4  # the four noise factors
    assert maps_rows == 2
    assert [h.split(". ", 1)[1] for h in headings] == ["The data", "The model", "Training", "Denoising",
                                                       "The latent space", "How to reproduce"]
    assert (ARTIFACTS / "report.png").stat().st_size > 50_000
