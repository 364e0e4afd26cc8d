"""The web demo end to end: ``python app.py`` in a subprocess, driven by headless Chromium through Playwright.

The browser uploads the bundled demo photo (the one ``python restore.py`` restores by default: 1328x568, 29
faces, about 20 s of CPU with the bundled compact prior), clicks Restore, and the test downloads the restored
image and the per-face JSON report from the links on the page. Every request the page makes to anything but
the app itself is blocked and recorded: the demo must work offline.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_PHOTO = REPO_ROOT / "data" / "demo" / "group" / "Solvay_conference_1927.png"
# Debian's package (.ci/run installs it); Playwright's own builds need internet
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 120
RESTORE_TIMEOUT_MS = 240_000

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"python app.py exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"python app.py did not serve {url} within {START_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.fixture
def app_url(tmp_path: Path):
    """``python app.py --port <free port>`` on 127.0.0.1 with the bundled compact prior and no persons."""
    port = _free_port()
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                # no downloaded GPEN-BFR-512: the prior
                "GPEN_FEWSHOT_WEIGHTS_DIR": str(tmp_path / "weights"),
                "GPEN_FEWSHOT_PERSONS_DIR": str(tmp_path / "persons"),
                "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"})
    log = tmp_path / "app.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--output-dir",
                                    str(tmp_path / "results")], cwd=REPO_ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def browser_page(tmp_path: Path):
    """A Playwright page in Debian's headless Chromium that can reach 127.0.0.1 only; yields (page,
    blocked)."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="needs the playwright package (pip install playwright)")
    if shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
    blocked: list[str] = []

    def local_only(route) -> None:
        if route.request.url.startswith(("http://127.0.0.1:", "data:", "blob:")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.route("**/*", local_only)
            yield page, blocked
        finally:
            browser.close()


def test_restore_the_demo_photo_in_the_browser(app_url: str, browser_page, tmp_path: Path) -> None:
    from PIL import Image

    page, blocked = browser_page
    page.goto(app_url, wait_until="networkidle")
    assert page.locator("#weights input").input_value() == "base"
    page.locator("#photo input[type=file]").set_input_files(str(DEMO_PHOTO))
    page.locator("#photo img").wait_for(timeout=30_000)
    page.click("#restore")
    image_link = page.locator("#restored-file a[download]")
    error = page.locator('[data-testid="toast-body"].error')
    image_link.or_(error).first.wait_for(timeout=RESTORE_TIMEOUT_MS)
    if error.count():
        page.screenshot(path=str(tmp_path / "web_demo_error.png"), full_page=True)
        pytest.fail(f"the page shows an error: {error.first.inner_text()}")
    page.locator("#compare img").first.wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "web_demo.png"), full_page=True)

    restored = page.request.get(image_link.get_attribute("href"))
    assert restored.ok
    with Image.open(io.BytesIO(restored.body())) as image:
        assert image.format == "PNG"
        assert image.size == Image.open(DEMO_PHOTO).size
    report = page.request.get(page.locator("#report-file a[download]").get_attribute("href"))
    assert report.ok
    faces = json.loads(report.body())
    assert faces["output_size"] == [568, 1328]
    assert len(faces["faces"]) >= 20 and all(f["decision"] == "restored" for f in faces["faces"])
    summary = page.locator("#summary textarea").input_value()
    assert summary.startswith(f"{len(faces['faces'])} face(s); weights: base")
    assert blocked == [], f"the page tried to reach outside the app: {blocked}"
