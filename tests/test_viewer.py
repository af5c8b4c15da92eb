"""What the radiologist sees: the real CR goes storescu -> Orthanc -> gateway -> Orthanc, then
headless Chromium (Debian `chromium`, `chromium-driver`) opens the study in Orthanc Explorer
and the Secondary Capture in Orthanc's Web Viewer (Debian `orthanc-webviewer`). The screenshot
must show the picture with the heat map over it and the score caption in its top-left corner.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image

from clinassist.config import data_dir
from clinassist.serving.gateway.config import GatewayConfig
from clinassist.serving.gateway.gateway import Gateway
from clinassist.serving.gateway.orthanc import local
from service_process import free_port
from test_gateway_support import shared_models, wait_for, write_config

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WEB_VIEWER = Path("/usr/share/orthanc/plugins/libOrthancWebViewer.so")
WINDOW = (1200, 900)
COLOURED = 60  # max - min channel: the heat map; the radiograph and the text are grey
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.skipif(
    not (shutil.which("Orthanc") and shutil.which("storescu") and WEB_VIEWER.exists()
         and Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs the Debian packages orthanc, orthanc-webviewer, dcmtk, chromium and "
           "chromium-driver (make system-packages)")]


@pytest.fixture
def browser() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def triaged_study(tmp_path) -> Iterator[tuple[local.LocalOrthanc, str]]:
    """Orthanc holding the real CR and the SR and SC the gateway sent back; its study id."""
    gateway_port = free_port()
    orthanc = local.start(tmp_path / "orthanc", free_port(), free_port(), gateway_port)
    home = tmp_path / "home"
    config = GatewayConfig.load(write_config(
        home, allowed_calling_ae_titles=["ORTHANC"], port=gateway_port,
        destinations=[f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"],
        orthanc={"url": orthanc.url, "poll_s": 1}))  # as sites run it: push and catch-up
    gateway = Gateway(home, config, shared_models())
    gateway.start()
    try:
        cr = data_dir() / "dicom_cr" / "RG1_UNCR.dcm"
        sent = subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "ORTHANC", "127.0.0.1",
                               str(orthanc.dicom_port), str(cr)], capture_output=True,
                              text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        try:
            wait_for(lambda: gateway.queue.counts() == {"done": 1}, 180, "the results delivered")
        except AssertionError as late:  # say where it stopped: Orthanc's route or the gateway
            jobs = httpx.get(f"{orthanc.url}/jobs?expand", timeout=10).json()
            dead = [job.last_error for job in gateway.queue.jobs("dead")]
            orthanc_jobs = [(job.get("Type"), job.get("State"), job.get("ErrorDetails"))
                            for job in jobs]
            raise AssertionError(f"{late}; gateway queue {gateway.queue.counts()}, dead jobs' "
                                 f"errors {dead}, Orthanc jobs {orthanc_jobs}") from None
        study_uid = pydicom.dcmread(cr, stop_before_pixels=True).StudyInstanceUID
        (found,) = httpx.post(f"{orthanc.url}/tools/lookup", content=study_uid,
                              timeout=10).json()
        yield orthanc, found["ID"]
    finally:
        gateway.stop()
        orthanc.stop()


def series_by_modality(orthanc: local.LocalOrthanc, study: str) -> dict[str, dict]:
    return {series["MainDicomTags"]["Modality"]: series
            for series in httpx.get(f"{orthanc.url}/studies/{study}/series", timeout=10).json()}


def screenshot(driver) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))


def coloured(rgb: np.ndarray) -> np.ndarray:
    wide = rgb.astype(np.int16)
    return wide.max(axis=-1) - wide.min(axis=-1) > COLOURED


def image_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    """Where the viewer drew the (portrait) picture on its black background, (left, top,
    right, bottom): the columns mostly not black (its captions in the margins are sparse),
    then the rows mostly lit between them but dark in the left margin (not its slider)."""
    lit = rgb.max(axis=-1) > 30
    columns = np.flatnonzero(lit.mean(axis=0) > 0.5)
    left, right = int(columns[0]), int(columns[-1]) + 1
    rows = np.flatnonzero((lit[:, left:right].mean(axis=1) > 0.5)
                          & (lit[:, : max(left - 5, 1)].mean(axis=1) < 0.5))
    return left, int(rows[0]), right, int(rows[-1]) + 1


def wait_for_picture(driver, sc_share: float, deadline_s: float = 90) -> np.ndarray:
    """The screenshot once the viewer has drawn the Secondary Capture: as much of the window
    coloured as the picture's heat map covers, scaled into the window."""
    deadline = time.monotonic() + deadline_s
    while True:
        shot = screenshot(driver)
        if coloured(shot).mean() > sc_share * 0.3:
            return shot
        assert time.monotonic() < deadline, "the web viewer drew no heat map"
        time.sleep(0.25)


def test_the_secondary_capture_shows_heat_map_and_score_in_orthancs_web_viewer(
        triaged_study, browser, tmp_path):
    orthanc, study = triaged_study
    series = series_by_modality(orthanc, study)
    assert set(series) == {"CR", "SR", "OT"}  # OT: the Secondary Capture's modality

    browser.get(f"{orthanc.url}/app/explorer.html#study?uuid={study}")
    listed = wait_for(lambda: browser.find_elements("css selector", "#list-series li h3") or
                      None, 30, "Orthanc Explorer's series list")
    assert [item.text for item in listed].count("clinassist triage") == 2  # the SR and the SC

    sc_instance = series["OT"]["Instances"][0]
    sc = pydicom.dcmread(io.BytesIO(httpx.get(f"{orthanc.url}/instances/{sc_instance}/file",
                                              timeout=30).content))
    sc_share = float(coloured(sc.pixel_array).mean())
    assert sc_share > 0.05  # the picture Orthanc holds has its heat map

    browser.get(f"{orthanc.url}/web-viewer/app/viewer.html?series={series['OT']['ID']}")
    shot = wait_for_picture(browser, sc_share)
    Image.fromarray(shot).save(tmp_path / "web-viewer.png")

    left, top, right, bottom = image_box(shot)
    shown = shot[top:bottom, left:right]
    assert (right - left) / (bottom - top) == pytest.approx(sc.Columns / sc.Rows, rel=0.05)
    assert coloured(shown).mean() == pytest.approx(sc_share, rel=0.35)  # the heat map, all of it
    peak = shown.astype(np.int16)
    assert ((peak[..., 0] - peak[..., 2]) > 100).sum() > 50  # its hot (red) peak

    # The caption band: the picture darkened to a third, with white glyphs (the score line
    # is its first row).
    band = shown[: (bottom - top) // 12, : (right - left) // 2]
    assert (band.max(axis=-1) < 100).mean() > 0.7
    assert (band.min(axis=-1) > 200).mean() > 0.01
