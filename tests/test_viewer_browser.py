"""The viewer in a real browser: a short rsseg-splat-lite training with the viewer on, headless Chromium selects
the semantic colour map, and the page must show the class legend and a render made of the classes' colours."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(condition, timeout: float, what: str, log: Path | None = None, ignored: tuple = ()):
    """Poll ``condition`` until it returns something true; ``ignored`` exceptions count as "not yet" (e.g. an
    element the page redrew between finding it and reading it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except ignored:
            result = None
        if result:
            return result
        time.sleep(0.5)
    tail = f"\nlast lines of {log}:\n" + log.read_text()[-3000:] if log is not None and log.is_file() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


@pytest.fixture
def viewer_url(tiny_scene: Path, tmp_path: Path):
    """ns-train with the viewer on a free loopback port, kept up after its few steps; stopped afterwards."""
    port = _free_port()
    log = (tmp_path / "train.log").open("w")
    command = [
        sys.executable, "-m", "nerfstudio.scripts.train", "rsseg-splat-lite",
        "--data", str(tiny_scene), "--output-dir", str(tmp_path / "runs"),
        "--max-num-iterations", "10", "--vis", "viewer", "--pipeline.final-report", "False",
        "--pipeline.appearance.enabled", "False",  # the viewer's job here; 2D rounds would delay the first render
        "--viewer.websocket-port", str(port), "--viewer.quit-on-train-completion", "False",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
    try:
        url = f"http://127.0.0.1:{port}"

        def listening() -> bool:
            assert process.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        _wait_for(listening, 90, "the viewer to listen")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def browser(tmp_path: Path):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e .[dev])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(flag)
    # An explicit driver path: selenium-manager never goes online.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _class_colour_share(image: np.ndarray, colours: np.ndarray, tolerance: float = 40.0) -> float:
    difference = image[:, :, None, :].astype(np.float32) - colours[None, None].astype(np.float32)
    distances = np.linalg.norm(difference, axis=-1)
    return float((distances.min(axis=-1) < tolerance).mean())


def test_viewer_shows_the_semantic_render_and_legend(viewer_url: str, browser, tiny_scene: Path, tmp_path: Path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    viewer_log = tmp_path / "train.log"  # the viewer fixture shares this test's tmp_path
    classes = json.loads((tiny_scene / "classes.json").read_text())["classes"]
    names = [c["name"] for c in classes]
    colours = np.asarray([c["color"] for c in classes])
    browser.get(viewer_url)
    body = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
    _wait_for(lambda: all(f"{i}: {name}" in body() for i, name in enumerate(names)), 60, "the class legend")
    assert "Highlight class" in body() and "Undo last correction" in body()

    def output_select():
        selects = browser.find_elements(By.CSS_SELECTOR, "input.mantine-Select-input")
        return next((s for s in selects if s.get_attribute("value") in ("rgb", "semantics_colormap")), None)

    def semantic_option():
        options = browser.find_elements(By.CSS_SELECTOR, "[role='option']")
        return next((o for o in options if o.text.strip() == "semantics_colormap"), None)

    def choose_semantics() -> bool:
        select = output_select()
        if select is None:
            return False
        select.click()
        # The dropdown draws a moment after the click: look for a while before closing it, so that on a slow
        # machine it is never closed again before its options were drawn.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            option = semantic_option()
            if option is not None:
                option.click()
                return True
            time.sleep(0.25)
        select.send_keys(Keys.ESCAPE)  # the output types arrive with the first render: close and retry
        return False

    # The first render on a 2-core CPU can take a while after the page is up; 180 s leaves room for a slow day.
    redrawn = (StaleElementReferenceException,)  # the panel redraws when the first render brings its outputs
    _wait_for(choose_semantics, 180, "semantics_colormap among the output types", log=viewer_log, ignored=redrawn)
    _wait_for(
        lambda: output_select().get_attribute("value") == "semantics_colormap", 10, "the output to switch",
        ignored=redrawn,
    )  # fmt: skip

    canvas = max(browser.find_elements(By.TAG_NAME, "canvas"), key=lambda c: c.size["width"] * c.size["height"])
    shot = tmp_path / "viewer_semantics.png"

    def semantic_render() -> bool:
        browser.save_screenshot(str(shot))
        image = np.asarray(Image.open(shot).convert("RGB"))
        top, height = int(canvas.location["y"]), int(canvas.size["height"])
        view = image[top + 20 : top + height - 20, 20 : image.shape[1] - 340]  # the render, left of the GUI panel
        return view.std() > 5 and _class_colour_share(view, colours) > 0.8

    _wait_for(semantic_render, 60, f"a render in the classes' colours (last screenshot: {shot})")
    keep = os.environ.get("NERFSEG_SCREENSHOT_DIR")
    if keep:  # for people looking at it: CI artefacts, the report
        shutil.copy(shot, Path(keep) / shot.name)
