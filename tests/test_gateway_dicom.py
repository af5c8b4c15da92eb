"""The gateway in-process over real DICOM associations on loopback: who may connect, what is
queued, triaged and delivered, what the audit trail and the log say."""

from __future__ import annotations

import argparse
import io
import json
import logging

import numpy as np
import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage

from dicom_fixtures import real_cr, synthetic_cr
from clinassist.serving.gateway.cli import register
from clinassist.serving.gateway.config import GatewayConfig
from clinassist.serving.gateway.gateway import Gateway
from clinassist.serving.gateway.worklist import Worklist
from clinassist.serving.security import AuditTrail, load_site_key, pseudonymise
from test_dicom_results import coded_value
from test_gateway_support import (Destination, Webhook, echo, radiograph, send, shared_models,
                                  wait_for, write_config)

SUCCESS = 0x0000


@pytest.fixture
def destination():
    destination = Destination()
    yield destination
    destination.stop()


@pytest.fixture
def run_gateway(tmp_path):
    """Start a gateway in `tmp_path` with settings; stopped after the test."""
    started: list[Gateway] = []

    def run(**settings) -> Gateway:
        config = GatewayConfig.load(write_config(tmp_path, **settings))
        gateway = Gateway(tmp_path, config, shared_models())
        gateway.start()
        started.append(gateway)
        return gateway

    yield run
    for gateway in started:
        gateway.stop()


def gateway_cli(*args: str) -> None:
    """`clinassist gateway ARGS` in this process, with CLINASSIST_HOME as the test set it."""
    root = argparse.ArgumentParser()
    register(root.add_subparsers(dest="command", required=True))
    parsed = root.parse_args(["gateway", *args])
    assert parsed.func(parsed) == 0


def records_of(home, action: str, outcome: str | None = None, at_least: int = 1) -> list:
    """The audit records of `action` (with `outcome`), once there are `at_least` of them."""
    records = [r for r in AuditTrail(home).records()
               if r.action == action and outcome in (None, r.outcome)]
    return records if len(records) >= at_least else []


def assert_one_sr_and_one_sc_per_study(destination: Destination, studies: list[str]) -> None:
    by_study = destination.results_by_study()
    assert sorted(by_study) == sorted(studies)
    for kinds in by_study.values():
        assert {k: len(v) for k, v in kinds.items()} == {Comprehensive3DSRStorage: 1,
                                                         SecondaryCaptureImageStorage: 1}


def test_echo_and_store_accepted_from_an_allowed_ae_title(run_gateway):
    gateway = run_gateway()
    assert echo(gateway.config.port) == SUCCESS
    assert send(gateway.config.port, [radiograph()]) == [SUCCESS]
    assert sum(gateway.queue.counts().values()) == 1


def test_other_calling_or_called_ae_titles_are_refused_and_audited(run_gateway, tmp_path):
    gateway = run_gateway()
    port = gateway.config.port
    assert echo(port, calling="INTRUDER") is None
    assert send(port, [radiograph()], calling="INTRUDER") == [None]
    assert echo(port, called="SOMEONE_ELSE") is None
    assert gateway.queue.counts() == {}
    refused = wait_for(lambda: records_of(tmp_path, "gateway:associate", at_least=3), 5,
                       "3 refusals audited")
    assert [r.outcome for r in refused] == ["failure"] * 3
    assert "'INTRUDER' to 'CLINASSIST'" in refused[0].detail
    assert "'PACS' to 'SOMEONE_ELSE'" in refused[2].detail


def test_results_are_delivered_to_the_destination_in_the_source_study(
        run_gateway, destination, tmp_path):
    destination.start()
    instances = [radiograph(i) for i in range(3)]
    gateway = run_gateway(destinations=[str(destination)])
    assert send(gateway.config.port, instances) == [SUCCESS] * 3
    wait_for(lambda: gateway.queue.counts() == {"done": 3}, 30, "3 jobs done")
    assert_one_sr_and_one_sc_per_study(destination, [str(ds.StudyInstanceUID) for ds in instances])
    sr = next(ds for ds in destination.stored if ds.SOPClassUID == Comprehensive3DSRStorage)
    source = next(ds for ds in instances if ds.StudyInstanceUID == sr.StudyInstanceUID)
    assert sr.PatientID == source.PatientID
    assert sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_every_step_is_audited_by_job_with_pseudonymised_patients(
        run_gateway, destination, tmp_path):
    destination.start()
    instance = radiograph(7)
    gateway = run_gateway(destinations=[str(destination)])
    send(gateway.config.port, [instance])
    wait_for(lambda: gateway.queue.counts() == {"done": 1}, 30, "the job done")
    job_id = gateway.queue.jobs()[0].id
    # The delivery is audited just after the job is marked done.
    wait_for(lambda: records_of(tmp_path, "gateway:deliver"), 5, "the delivery audited")
    records = [r for r in AuditTrail(tmp_path).records() if r.resource == job_id]
    assert [(r.action, r.outcome) for r in records] == [
        ("gateway:receive", "success"), ("gateway:process", "success"),
        ("gateway:deliver", "success")]
    pseudonym = pseudonymise(instance.PatientID, load_site_key(tmp_path))
    assert all(r.patients == (pseudonym,) and r.actor == "gateway:CLINASSIST" for r in records)
    assert instance.PatientID not in (tmp_path / "audit.db").read_bytes().decode("latin-1")
    assert AuditTrail(tmp_path).verify().ok


def test_an_instance_sent_twice_is_triaged_and_delivered_once(run_gateway, destination):
    destination.start()
    instance = radiograph(1)
    gateway = run_gateway(destinations=[str(destination)])
    send(gateway.config.port, [instance])
    wait_for(lambda: gateway.queue.counts() == {"done": 1}, 30, "the first job done")
    assert send(gateway.config.port, [instance]) == [SUCCESS]
    assert gateway.queue.counts() == {"done": 1}
    assert len(destination.stored) == 2  # one SR, one SC


def test_results_wait_while_the_destination_is_down_and_arrive_when_it_returns(
        run_gateway, destination, tmp_path):
    instance = radiograph(2)
    gateway = run_gateway(destinations=[str(destination)], max_attempts=50)
    send(gateway.config.port, [instance])
    wait_for(lambda: records_of(tmp_path, "gateway:deliver", "failure", at_least=2), 30,
             "two failed deliveries")
    assert destination.stored == [] and gateway.queue.counts() == {"processed": 1}
    destination.start()
    wait_for(lambda: gateway.queue.counts() == {"done": 1}, 30, "delivery after the return")
    assert_one_sr_and_one_sc_per_study(destination, [str(instance.StudyInstanceUID)])


def test_dead_lettered_job_is_listed_by_status_and_delivered_after_retry(
        run_gateway, destination, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLINASSIST_HOME", str(tmp_path))
    gateway = run_gateway(destinations=[str(destination)], max_attempts=2)
    send(gateway.config.port, [radiograph(3)])
    wait_for(lambda: gateway.queue.counts() == {"dead": 1}, 30, "the job dead-lettered")
    # The job is dead in the queue just before its last failure is audited.
    wait_for(lambda: records_of(tmp_path, "gateway:fail"), 5, "the dead letter audited")
    capsys.readouterr()
    gateway_cli("status", "--json")
    status = json.loads(capsys.readouterr().out)
    assert status["jobs"] == {"dead": 1} and status["dead"][0]["attempts"] == 2
    assert status["dead"][0]["error"].startswith("DeliveryError")
    gateway_cli("status")
    assert capsys.readouterr().out.startswith(f"dead: 1\ndead {status['dead'][0]['job']} after 2")
    actions = [r.action for r in AuditTrail(tmp_path).records()]
    assert actions.count("gateway:deliver") == 2 and actions.count("gateway:fail") == 1
    destination.start()
    gateway_cli("retry", "--all")
    wait_for(lambda: gateway.queue.counts() == {"done": 1}, 30, "delivery after retry")
    assert len(destination.stored) == 2


def test_an_unusable_instance_is_rejected_once_and_not_retried(run_gateway, destination):
    destination.start()
    pixels = np.zeros((2, 32, 32), dtype=np.uint16)
    multi_frame = synthetic_cr(pixels[0], NumberOfFrames=2, PatientID="P-MF")
    multi_frame.PixelData = pixels.tobytes()
    gateway = run_gateway(destinations=[str(destination)])
    assert send(gateway.config.port, [multi_frame]) == [SUCCESS]
    wait_for(lambda: gateway.queue.counts() == {"rejected": 1}, 30, "the job rejected")
    assert gateway.queue.jobs()[0].last_error == "multi-frame" and destination.stored == []


def test_worklist_lists_the_triaged_studies(run_gateway, tmp_path):
    instances = [radiograph(i) for i in range(2)]
    gateway = run_gateway()
    send(gateway.config.port, instances)
    wait_for(lambda: gateway.queue.counts() == {"done": 2}, 30, "2 jobs done")
    entries = Worklist(tmp_path).entries()
    assert sorted(e.study_instance_uid for e in entries) == sorted(
        str(ds.StudyInstanceUID) for ds in instances)
    assert {e.priority for e in entries} <= {"urgent", "routine", "unscored"}


def test_the_gateway_log_lines_carry_no_patient_identifiers(run_gateway, destination, caplog):
    """Our own loggers; test_gateway_crash checks a real `serve` log, libraries included."""
    destination.start()
    instance = radiograph(4)
    caplog.set_level(logging.INFO)
    gateway = run_gateway(destinations=[str(destination)])
    send(gateway.config.port, [instance])

    def our_lines() -> str | None:
        """Our loggers' lines, once the delivery (logged after the job is done) is among them."""
        lines = "\n".join(r.getMessage() for r in caplog.records
                          if r.name.startswith("clinassist.serving"))
        return lines if "delivered" in lines else None

    ours = wait_for(our_lines, 30, "the delivery logged")
    assert "received" in ours and "processed" in ours
    for identifier in (instance.PatientID, str(instance.PatientName), instance.AccessionNumber,
                       instance.SOPInstanceUID, instance.StudyInstanceUID):
        assert identifier not in ours


def test_a_webhook_gets_a_fhir_diagnostic_report_on_the_study_with_its_priority(run_gateway):
    webhook = Webhook()
    try:
        instance = radiograph(5)
        gateway = run_gateway(destinations=[f"webhook:{webhook.url}"])
        send(gateway.config.port, [instance])
        wait_for(lambda: gateway.queue.counts() == {"done": 1}, 30, "the webhook delivery")
    finally:
        webhook.stop()
    [report] = webhook.received
    assert (report["resourceType"], report["status"]) == ("DiagnosticReport", "preliminary")
    assert report["subject"]["identifier"]["value"] == instance.PatientID
    [study] = report["contained"]
    assert study["identifier"][0]["value"] == f"urn:oid:{instance.StudyInstanceUID}"
    assert report["imagingStudy"] == [{"reference": "#study"}]
    [priority] = [e for e in report["extension"] if e["url"].endswith("triage-priority")]
    assert priority["valueCode"] in ("urgent", "routine", "unscored")


def test_the_sr_built_for_a_gateway_result_names_the_study_worklist_priority(run_gateway,
                                                                             tmp_path):
    gateway = run_gateway()
    assert send(gateway.config.port, [pydicom.dcmread(io.BytesIO(real_cr()))]) == [SUCCESS]
    wait_for(lambda: gateway.queue.counts() == {"done": 1}, 60, "the job done")
    (entry,) = Worklist(tmp_path).entries()
    assert entry.priority in ("urgent", "routine")  # the real CR passes QC and is scored
    sr = pydicom.dcmread(io.BytesIO(gateway.worker.results.read(entry.result_id, "sr")))
    assert coded_value(sr, "Study worklist priority") == [entry.priority.capitalize()]


def test_the_gateway_reads_headers_without_pydicoms_value_checks_as_the_api_does(run_gateway):
    """The API worker reads as it comes and checks what triage needs itself (header QC); the
    gateway runs the same pipeline the same way, and the checks cost it ~3 ms an association."""
    settings = pydicom.config.settings
    before = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.WARN
    try:
        run_gateway()
        assert settings.reading_validation_mode == pydicom.config.IGNORE
    finally:
        settings.reading_validation_mode = before
