"""visionfm app in a real headless browser (the system's Chromium through Selenium), with the toyworld models.

Slow: the first run trains the toyworld models (then cached). Run with::

    apt-get install chromium chromium-driver      # once
    pytest -m slow tests/app/test_browser.py

``VISIONFM_APP_SCREENSHOT=docs/images/app.png`` also saves the page after the segmentation step (the docs' picture).
"""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    chromium, driver_bin = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.fail("the browser test needs Chromium and its driver: apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,820"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_bin))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def url():
    from visionfm.app import AppConfig, create_server

    srv = create_server(AppConfig(), port=0)  # the defaults: toyworld CLIP and SAM, offline
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()
    srv.app.close()


def _wait(driver, condition, timeout=900):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def _overlay_task(driver) -> str:
    return driver.execute_script("return document.getElementById('overlay').dataset.task || ''")


def test_upload_label_segment_click_ground_and_bad_input(browser, url, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from visionfm.toyworld.world import ToyWorld

    scene = ToyWorld("heldout", 6, seed=3, min_objects=2, max_objects=3)[2]  # the docs' screenshot
    path = tmp_path / "scene.png"
    Image.fromarray(scene.image).save(path)
    h, w = scene.image.shape[:2]
    colours = sorted({o.colour for o in scene.objects})

    browser.get(url)
    _wait(browser, lambda d: "segmentation:" in d.find_element(By.ID, "models").text, 60)
    browser.find_element(By.ID, "upload").send_keys(str(path))
    _wait(browser, lambda d: f"{w} × {h}" in d.find_element(By.ID, "input-info").text, 60)

    # labels typed, Segment: an overlay of the image's size appears
    labels = browser.find_element(By.ID, "labels")
    labels.send_keys(", ".join(colours))
    browser.find_element(By.ID, "segment").click()
    _wait(browser, lambda d: _overlay_task(d) == "segment")
    size = browser.execute_script(
        "const o = document.getElementById('overlay'); return [o.naturalWidth, o.naturalHeight]"
    )
    assert size == [w, h]
    assert "px" in browser.find_element(By.ID, "items").text  # the legend table: label, pixel count
    assert not browser.find_element(By.ID, "error").is_displayed()
    shot = os.environ.get("VISIONFM_APP_SCREENSHOT")
    if shot:
        browser.save_screenshot(shot)

    # click-to-segment with SAM on the first object's centre
    ys, xs = np.nonzero(scene.masks[0])
    img = browser.find_element(By.ID, "input-image")
    scale = img.size["width"] / w
    ActionChains(browser).move_to_element_with_offset(
        img,
        int((xs.mean() + 0.5) * scale - img.size["width"] / 2),
        int((ys.mean() + 0.5) * scale - img.size["height"] / 2),
    ).click().perform()
    _wait(browser, lambda d: _overlay_task(d) == "click")
    assert "predicted IoU" in browser.find_element(By.ID, "items").text

    # grounding the colours: boxes (and SAM masks) drawn on an overlay of the image's size
    browser.find_element(By.ID, "ground").click()
    _wait(browser, lambda d: _overlay_task(d) == "ground")
    assert browser.execute_script("return document.getElementById('overlay').naturalWidth") == w

    # empty labels: a message on the page, no request queued
    labels.clear()
    browser.find_element(By.ID, "segment").click()
    _wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed(), 30)
    assert "type at least one label" in browser.find_element(By.ID, "error").text

    # bad uploads: the error on the page, not a stack trace
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    browser.find_element(By.ID, "upload").send_keys(str(bad))
    _wait(browser, lambda d: "Upload refused" in d.find_element(By.ID, "error").text, 60)
    text = browser.find_element(By.ID, "error").text
    assert "notes.png" in text and "not a recognised image format" in text and "Traceback" not in text

    # a huge image (5000 x 4000 = 20 MP, over the default 16.7 MP): refused from its header, with the limit named
    huge = tmp_path / "huge.png"
    Image.new("RGB", (5000, 4000), (90, 90, 90)).save(huge)
    browser.find_element(By.ID, "upload").send_keys(str(huge))
    _wait(browser, lambda d: "huge.png" in d.find_element(By.ID, "error").text, 60)
    text = browser.find_element(By.ID, "error").text
    assert "5000x4000 = 20000000 pixels, more than this app's limit of 16777216" in text and "--max-pixels" in text
