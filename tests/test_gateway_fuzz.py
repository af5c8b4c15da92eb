"""Bad input at the SCP: a real `gateway serve` answers every raw C-STORE of a damaged data set
with a failure status and an error comment (never an unhandled exception or a dropped
association), stays up, and writes no patient identifier in its log, tracebacks included."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import SecondaryCaptureImageStorage

from clinassist.serving.gateway.config import GatewayConfig
from clinassist.serving.gateway.gateway import open_queue
from clinassist.serving.gateway.inspection import StoreStatus
from dicom_fixtures import synthetic_cr, to_bytes
from gateway_fuzz import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, StoreSender, StoreTally, scp_payloads
from test_gateway_support import GatewayProcess, echo, wait_for, write_config

FUZZED = 300  # seeded (derandomized) examples in the suite; benchmarks/fuzz_scp.py sends more
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")  # reading what we send


@dataclass
class FuzzedGateway:
    home: Path
    config: GatewayConfig
    process: GatewayProcess
    sender: StoreSender

    def log(self) -> str:
        return (self.home / "gateway.log").read_text()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """One `gateway serve` process for the module (no destinations: results stay local)."""
    home = tmp_path_factory.mktemp("fuzz")
    config = GatewayConfig.load(write_config(home, workers=1, max_attempts=1))
    process = GatewayProcess(home, config.port).start()
    sender = StoreSender(config.port)
    yield FuzzedGateway(home, config, process, sender)
    sender.close()
    process.stop()


def radiograph_bytes(change: Callable[[Dataset], None] = lambda ds: None) -> bytes:
    ds = synthetic_cr(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32),
                      PatientName=FAKE_PATIENT_NAME, PatientID=FAKE_PATIENT_ID)
    change(ds)
    return to_bytes(ds)


def raw(keyword: str, vr: str, value: str) -> Callable[[Dataset], None]:
    """Set `keyword` to these bytes as they are (pydicom would refuse to write them)."""
    def change(ds: Dataset) -> None:
        encoded = value.encode() + b" " * (len(value) % 2)
        ds[Tag(keyword)] = RawDataElement(Tag(keyword), vr, len(encoded), encoded, 0, False, True)
    return change


def drop_sop_instance_uid(ds: Dataset) -> None:
    """The data set without it; the request (from the file meta) still names one."""
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    del ds.SOPInstanceUID


def drop_sop_class_uid(ds: Dataset) -> None:
    """The data set without it; the request (from the file meta) still names one."""
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    del ds.SOPClassUID


def halve_pixel_data(ds: Dataset) -> None:
    ds.PixelData = ds.PixelData[:len(ds.PixelData) // 2]


CASES = {  # name: (file bytes, status, a word of the error comment)
    "valid": (radiograph_bytes(), StoreStatus.SUCCESS, None),
    "no Study Instance UID": (radiograph_bytes(lambda ds: delattr(ds, "StudyInstanceUID")),
                              StoreStatus.INVALID_IDENTIFIERS, "Study"),
    "no Series Instance UID": (radiograph_bytes(lambda ds: delattr(ds, "SeriesInstanceUID")),
                               StoreStatus.INVALID_IDENTIFIERS, "Series"),
    "no SOP Instance UID": (radiograph_bytes(drop_sop_instance_uid),
                            StoreStatus.INVALID_IDENTIFIERS, "SOP Instance"),
    "no SOP Class UID": (radiograph_bytes(drop_sop_class_uid), StoreStatus.INVALID_IDENTIFIERS,
                         "SOP"),
    "a date that is not one": (radiograph_bytes(raw("StudyDate", "DA", "20241345")),
                               StoreStatus.CANNOT_UNDERSTAND, "parsed"),
    "IS not a number": (radiograph_bytes(raw("InstanceNumber", "IS", "12a")),
                        StoreStatus.INVALID_VALUE, "InstanceNumber"),
    "DS holding the patient's name": (radiograph_bytes(raw("RescaleSlope", "DS",
                                                           FAKE_PATIENT_NAME)),
                                      StoreStatus.INVALID_VALUE, "RescaleSlope"),
    "unknown SOP Class UID": (radiograph_bytes(raw("SOPClassUID", "UI", "1.2.826.0.1.3680043.9")),
                              StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "SOP Class"),
    "another SOP Class than the request's": (
        radiograph_bytes(lambda ds: setattr(ds, "SOPClassUID", SecondaryCaptureImageStorage)),
        StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "SOP Class"),
    "pixel data shorter than Rows x Columns": (radiograph_bytes(halve_pixel_data),
                                               StoreStatus.INVALID_PIXEL_DATA, "Pixel Data"),
    "cut inside the pixel data": (radiograph_bytes()[:-300], StoreStatus.CANNOT_UNDERSTAND,
                                  "ends inside"),
    "garbage bytes": (b"\x08\x00\x16\x00garbage" * 40, StoreStatus.CANNOT_UNDERSTAND, None),
}


@pytest.mark.parametrize("case", CASES)
def test_each_fault_gets_its_failure_status_and_an_error_comment(gateway, case):
    payload, status, word = CASES[case]
    answer, comment = gateway.sender.send(payload)
    assert answer == status, comment
    if status != StoreStatus.SUCCESS:
        assert comment and len(comment) <= 64 and FAKE_PATIENT_NAME not in comment
        assert word is None or word in comment


def test_fuzzed_c_stores_all_get_a_status_the_scp_stays_up_and_the_log_names_no_patient(
        gateway):
    tally = StoreTally()

    @settings(max_examples=FUZZED, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(scp_payloads())
    def store(payload: bytes) -> None:
        tally.record(*gateway.sender.send(payload))

    store()
    assert tally.failures == [] and tally.sent == FUZZED
    assert tally.statuses[StoreStatus.SUCCESS] < FUZZED / 2 < sum(tally.statuses.values())
    assert echo(gateway.config.port) == StoreStatus.SUCCESS
    queue = open_queue(gateway.home, gateway.config)  # what was accepted is triaged too
    wait_for(lambda: queue.backlog() == 0, 300, "every accepted instance triaged")
    assert gateway.process.process.poll() is None
    log = gateway.log()
    assert "refused an instance from PACS: 0xC001" in log  # the fuzz reached the inspection
    for forbidden in (*FAKE_PATIENT_NAME.split("^"), FAKE_PATIENT_ID, "Traceback",
                      "could not be inspected", "uncaught"):
        assert forbidden not in log
