"""The page end to end in Debian's headless Chromium (Selenium): sign in with the token, upload a
real NIfTI, run, wait for done, check NiiVue drew the overlay, download the labels."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from medfoundry.io import read_image, read_label
from medfoundry.serve.app import VIEWER_JS

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER, VIEWER_JS) if not p.exists()]
    if missing:
        msg = f"browser test needs {', '.join(missing)} (scripts/setup.sh installs them)"
        if os.environ.get("MEDFOUNDRY_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture
def browser(tmp_path):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--use-angle=swiftshader",  # WebGL2 on the CPU
        "--enable-unsafe-swiftshader",
    ):
        opts.add_argument(arg)
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def _until(check, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_upload_run_view_download(browser, server, hippo_dir, tmp_path):
    from selenium.webdriver.common.by import By

    url, token, _ = server
    source = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0]
    upload = tmp_path / "case.nii.gz"  # a path the browser may read
    shutil.copy(source, upload)

    browser.get(url + "/")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "signin").click()
    _until(lambda: "admin" in browser.find_element(By.ID, "who").text, 20, "sign-in")
    model = browser.find_element(By.ID, "model")
    _until(lambda: model.get_attribute("value") == "small", 20, "the model list")
    browser.find_element(By.ID, "file").send_keys(str(upload))
    browser.find_element(By.ID, "run").click()

    state = _until(
        lambda: (
            browser.execute_script("return window.medfoundry.overlayVoxels()")["volumes"] == 2
            and browser.execute_script("return window.medfoundry.overlayVoxels()")
        ),
        120,
        "the image and its labels in the viewer",
    )
    assert browser.find_element(By.ID, "stage").text == "done"
    assert browser.find_element(By.ID, "error").text == ""
    drawn = browser.execute_script("return window.medfoundry.overlayPixels()")
    browser.find_element(By.ID, "download-labels").click()
    path = _until(lambda: next(browser.downloads.glob("*labels.nii.gz"), None), 20, "the download")
    _until(lambda: not list(browser.downloads.glob("*.crdownload")), 20, "the download to end")
    labels_on_disk = read_label(path)
    assert labels_on_disk.same_geometry(read_image(source))
    labelled = int((labels_on_disk.array > 0).sum())
    assert state["labelled"] == labelled  # the viewer holds the served label map
    if labelled:
        assert drawn > 0, "NiiVue did not draw the label overlay"

    # brush edit: the drawing (here set by script: 500 voxels of class 1) saved as the new labels
    browser.find_element(By.ID, "edit").click()
    browser.execute_script(
        "const nv = window.medfoundry.state.nv; nv.drawBitmap.fill(0);"
        "for (let i = 0; i < 500; i++) nv.drawBitmap[i] = 1; nv.refreshDrawing(true);"
    )
    browser.find_element(By.ID, "save-edit").click()
    _until(
        lambda: (
            browser.execute_script("return window.medfoundry.overlayVoxels()")["labelled"] == 500
        ),
        30,
        "the corrected labels in the viewer",
    )
    files = browser.execute_script("return window.medfoundry.state.job.files")
    assert "labels_model" in files and browser.find_element(By.ID, "error").text == ""
