"""PACS catch-up with the real Orthanc (Debian packages): chest radiographs stored into Orthanc
while the gateway was down are triaged once each from Orthanc's change log, whatever stops in
between (Orthanc restarted, the gateway killed -9), and push and catch-up together still score
each instance once."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom.uid import (ComputedRadiographyImageStorage, Comprehensive3DSRStorage,
                         SecondaryCaptureImageStorage, generate_uid)

from clinassist.serving.gateway.catchup import StoredInstance
from clinassist.serving.gateway.config import GatewayConfig
from clinassist.serving.gateway.gateway import Gateway, open_queue
from clinassist.serving.gateway.orthanc import local
from dicom_fixtures import synthetic_cr, to_bytes
from service_process import free_port
from test_gateway_support import (GatewayProcess, processes, shared_models,  # noqa: F401
                                  wait_for, write_config)

INSTANCES = 50
SOP_CLASS, EVIDENCE, SERIES, SOPS, REFERENCED = (
    "00080016", "0040A375", "00081115", "00081199", "00081155")
orthanc_installed = pytest.mark.skipif(
    not (shutil.which("Orthanc") and shutil.which("storescu")),
    reason="needs the Debian packages orthanc, orthanc-dicomweb and dcmtk")


@pytest.fixture
def orthanc(tmp_path):
    """Orthanc on free loopback ports, routing (Lua) to a gateway expected on `gateway_port`."""
    gateway_port = free_port()
    orthanc = local.start(tmp_path / "orthanc", free_port(), free_port(), gateway_port)
    yield orthanc, gateway_port
    orthanc.stop()


def write_study(folder: Path, count: int, study: str | None = None) -> tuple[str, list[str]]:
    """`count` small CR chest instances of one study as files; its UID and theirs."""
    folder.mkdir(parents=True)
    study, series = study or generate_uid(), generate_uid()
    uids = []
    for index in range(count):
        pixels = np.random.default_rng(index).integers(0, 4096, (64, 64), dtype=np.uint16)
        ds = synthetic_cr(pixels, StudyInstanceUID=study, SeriesInstanceUID=series,
                          InstanceNumber=index + 1, PatientID="PID-CATCHUP-SECRET",
                          PatientName="Doe^Catchup")
        (folder / f"{index:03d}.dcm").write_bytes(to_bytes(ds))
        uids.append(str(ds.SOPInstanceUID))
    return study, uids


def store(orthanc: local.LocalOrthanc, folder: Path) -> None:
    """Send every file of `folder` into Orthanc over one association, with dcmtk's storescu."""
    sent = subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "ORTHANC", "+sd", "127.0.0.1",
                           str(orthanc.dicom_port), str(folder)], capture_output=True,
                          text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr


def catch_up_config(home: Path, orthanc: local.LocalOrthanc, gateway_port: int) -> Path:
    """Gateway settings: Orthanc's change log followed every 0.2 s, at most 4 instances waiting
    for triage (so catch-up of 50 lasts long enough to be interrupted), results back by C-STORE."""
    return write_config(home, allowed_calling_ae_titles=["ORTHANC"], port=gateway_port,
                        workers=2, destinations=[f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"],
                        orthanc={"url": orthanc.url, "poll_s": 0.2, "max_backlog": 4})


def results_in_study(orthanc: local.LocalOrthanc, study: str) -> dict[str, list[dict]]:
    """The study's instances in Orthanc (DICOMweb metadata), by SOP Class UID."""
    answer = httpx.get(f"{orthanc.url}/dicom-web/studies/{study}/metadata", timeout=60)
    by_class: dict[str, list[dict]] = {}
    for instance in answer.json() if answer.status_code == 200 else []:
        by_class.setdefault(instance[SOP_CLASS]["Value"][0], []).append(instance)
    return by_class


def assert_each_instance_scored_once(orthanc: local.LocalOrthanc, study: str,
                                     sources: list[str]) -> None:
    """Once results stop arriving: one SR and one SC per source instance, each SR citing a
    different source."""
    def complete() -> dict[str, list[dict]] | None:
        found = results_in_study(orthanc, study)
        counts = [len(found.get(c, [])) for c in (Comprehensive3DSRStorage,
                                                   SecondaryCaptureImageStorage)]
        return found if min(counts) >= len(sources) else None

    found = wait_for(complete, 300, f"{len(sources)} SRs and SCs in the study")
    assert {c: len(v) for c, v in found.items()} == {
        ComputedRadiographyImageStorage: len(sources), Comprehensive3DSRStorage: len(sources),
        SecondaryCaptureImageStorage: len(sources)}
    cited = [sr[EVIDENCE]["Value"][0][SERIES]["Value"][0][SOPS]["Value"][0][REFERENCED]["Value"][0]
             for sr in found[Comprehensive3DSRStorage]]
    assert sorted(cited) == sorted(sources)


def wait_all_done(home: Path, config: GatewayConfig, count: int) -> None:
    queue = open_queue(home, config)
    wait_for(lambda: queue.counts() == {"done": count}, 300, f"{count} jobs done")


def mid_catch_up(home: Path, config: GatewayConfig) -> int:
    """Wait until catch-up has queued some but not all instances; how many it has."""
    queue = open_queue(home, config)
    return wait_for(lambda: len(queue.jobs()) if 0 < len(queue.jobs()) < INSTANCES else 0, 120,
                    "catch-up under way")


@orthanc_installed
def test_instances_stored_while_the_gateway_was_down_are_each_scored_once(tmp_path, orthanc):
    orthanc, gateway_port = orthanc
    study, sources = write_study(tmp_path / "down", INSTANCES)
    store(orthanc, tmp_path / "down")  # the Lua push fails: no gateway listens
    home = tmp_path / "home"
    config = GatewayConfig.load(catch_up_config(home, orthanc, gateway_port))
    gateway = Gateway(home, config, shared_models())
    gateway.start()
    try:
        assert_each_instance_scored_once(orthanc, study, sources)
        # Now running: the push and catch-up both see each new instance, one job each.
        _, more = write_study(tmp_path / "up", 5, study)
        store(orthanc, tmp_path / "up")
        assert_each_instance_scored_once(orthanc, study, sources + more)
        wait_all_done(home, config, INSTANCES + 5)
    finally:
        gateway.stop()
    pushed = [job for job in gateway.queue.jobs() if job.calling_ae_title == "ORTHANC"]
    assert sorted(j.sop_instance_uid for j in gateway.queue.jobs()) == sorted(sources + more)
    assert {j.sop_instance_uid for j in pushed} <= set(more)


@orthanc_installed
def test_orthanc_restarted_during_catch_up(tmp_path, orthanc):
    orthanc, gateway_port = orthanc
    study, sources = write_study(tmp_path / "in", INSTANCES)
    store(orthanc, tmp_path / "in")
    home = tmp_path / "home"
    config = GatewayConfig.load(catch_up_config(home, orthanc, gateway_port))
    gateway = Gateway(home, config, shared_models())
    gateway.start()
    try:
        assert mid_catch_up(home, config) < INSTANCES
        orthanc.restart()
        assert_each_instance_scored_once(orthanc, study, sources)
        wait_all_done(home, config, INSTANCES)
    finally:
        gateway.stop()


@orthanc_installed
def test_gateway_killed_during_catch_up(tmp_path, orthanc, processes):
    orthanc, gateway_port = orthanc
    study, sources = write_study(tmp_path / "in", INSTANCES)
    store(orthanc, tmp_path / "in")
    home = tmp_path / "home"
    config = GatewayConfig.load(catch_up_config(home, orthanc, gateway_port))
    processes.append(GatewayProcess(home, gateway_port, calling="ORTHANC").start())
    mid_catch_up(home, config)
    assert processes[-1].kill(signal.SIGKILL) == -signal.SIGKILL
    queued = len(open_queue(home, config).jobs())
    assert queued < INSTANCES, "killed after catch-up ended: nothing left to test"
    processes.append(GatewayProcess(home, gateway_port, calling="ORTHANC").start())
    assert_each_instance_scored_once(orthanc, study, sources)
    wait_all_done(home, config, INSTANCES)
    log = (home / "gateway.log").read_text()
    assert "PID-CATCHUP-SECRET" not in log and "Catchup" not in log


def test_the_filter_is_the_lua_routes():
    def instance(modality="CR", body_part="CHEST", sender="MODALITY"):
        return StoredInstance(ComputedRadiographyImageStorage, "1.2.3", modality, body_part, sender)

    assert instance().routed("CLINASSIST")
    assert instance(modality="DX", body_part="").routed("CLINASSIST")
    assert instance(body_part="chest", sender=None).routed("CLINASSIST")  # uploaded over REST
    assert not instance(modality="SR").routed("CLINASSIST")
    assert not instance(modality="OT").routed("CLINASSIST")
    assert not instance(body_part="KNEE").routed("CLINASSIST")
    assert not instance(sender="CLINASSIST").routed("CLINASSIST")
