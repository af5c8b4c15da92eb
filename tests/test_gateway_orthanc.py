"""Orthanc (Debian packages) routes a real CR to the gateway with the shipped Lua script, and
the SR and Secondary Capture come back into the same study, found through DICOMweb."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage

from clinassist.config import data_dir
from clinassist.serving.gateway.config import GatewayConfig
from clinassist.serving.gateway.gateway import Gateway
from clinassist.serving.gateway.orthanc import local
from service_process import free_port
from test_gateway_support import shared_models, wait_for, write_config

SOP_CLASS_UID, SERIES_UID = "00080016", "0020000E"
pytestmark = pytest.mark.skipif(
    not (shutil.which("Orthanc") and shutil.which("storescu")),
    reason="needs the Debian packages orthanc, orthanc-dicomweb and dcmtk")


@pytest.fixture
def orthanc(tmp_path):
    """Orthanc on free loopback ports, routing to a gateway expected on `gateway_port`."""
    gateway_port = free_port()
    orthanc = local.start(tmp_path / "orthanc", free_port(), free_port(), gateway_port)
    yield orthanc, gateway_port
    orthanc.stop()


@pytest.mark.parametrize("delivery", ["c-store", "stow-rs"])
def test_real_cr_sent_to_orthanc_comes_back_with_sr_and_sc_in_its_study(
        tmp_path, orthanc, delivery):
    orthanc, gateway_port = orthanc
    destination = (f"ORTHANC@127.0.0.1:{orthanc.dicom_port}" if delivery == "c-store"
                   else f"{orthanc.url}/dicom-web")
    home = tmp_path / "home"
    config = GatewayConfig.load(write_config(
        home, allowed_calling_ae_titles=["ORTHANC"], port=gateway_port,
        destinations=[destination]))
    gateway = Gateway(home, config, shared_models())
    gateway.start()
    try:
        cr = data_dir() / "dicom_cr" / "RG1_UNCR.dcm"
        source = pydicom.dcmread(cr, stop_before_pixels=True)
        sent = subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "ORTHANC", "127.0.0.1",
                               str(orthanc.dicom_port), str(cr)], capture_output=True,
                              text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr

        def study_with_results() -> list[dict] | None:
            """The study's instances once the SR and SC are among them."""
            answer = httpx.get(f"{orthanc.url}/dicom-web/studies/{source.StudyInstanceUID}"
                               "/instances", timeout=10)
            found = answer.json() if answer.status_code == 200 else []
            return found if len(found) >= 3 else None

        # The destination stores the objects before the gateway records their delivery: wait
        # for both states, the job done and Orthanc holding the SR and SC.
        wait_for(lambda: gateway.queue.counts() == {"done": 1}, 180, "the job done")
        found = wait_for(study_with_results, 30, "the SR and SC back in Orthanc")
        classes = sorted(i[SOP_CLASS_UID]["Value"][0] for i in found)
        assert classes == sorted([source.SOPClassUID, Comprehensive3DSRStorage,
                                  SecondaryCaptureImageStorage])
        assert len({i[SERIES_UID]["Value"][0] for i in found}) == 3  # a new series each
    finally:
        gateway.stop()
