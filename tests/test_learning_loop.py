"""The site learning loop end to end, with the real components: the service triages a site's
studies over HTTP, a radiologist reads them, the readings become a de-identified dataset, a
tiny fine-tuning run starts from the running model, the gate judges it, an admin promotes it,
the service serves it, and one command rolls it back.

A one-epoch run on a dozen site patients is not shown better on the site's held-out patients,
so the gate fails it (the right answer) and the promotion needs the admin's override; the
passing path of the rule is tested in test_cxr_gate and the registry's in test_model_registry.
"""

from __future__ import annotations

import io
import json
import resource
import time
from datetime import date

import httpx
import pydicom
import pytest

from dicom_fixtures import to_bytes
from registry_fixtures import COMMITTED
from service_process import cli, start
from site_fixtures import site_studies, use_fixed_site_key, write_instances
from clinassist.bundle import read_metadata
from clinassist.training.site_data import read_site_dataset, split_by_patient

PER_CLASS = 12
PUBLIC_LIMIT = 40  # public test images per population in this smoke gate
COMMITTED_VERSION = read_metadata(COMMITTED)[1]["version"]
# About 5 minutes of CPU; on the shared 2-core machine under load a run took over 15 minutes.
LOOP_TIMEOUT_S = 3600


class Steps:
    """Prints how long each step took (a record for the README, not an assertion)."""

    def __init__(self) -> None:
        self.last, self.cpu = time.monotonic(), self.cpu_now()

    @staticmethod
    def cpu_now() -> float:
        """CPU seconds of this process and the finished commands it ran (not the service)."""
        own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                              resource.RUSAGE_CHILDREN))
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def done(self, step: str) -> None:
        now, cpu = time.monotonic(), self.cpu_now()
        print(f"learning loop: {step}: {now - self.last:.0f} s, {cpu - self.cpu:.0f} s of CPU")
        self.last, self.cpu = now, cpu


def sr_versions(service, answer: dict) -> set[str]:
    sr = httpx.get(service.url + answer["objects"]["sr"], timeout=60,
                   headers=service.headers("radiologist"))
    return {str(e.get("SoftwareVersions")) for e in
            pydicom.dcmread(io.BytesIO(sr.content)).ContributingEquipmentSequence}


@pytest.mark.timeout(LOOP_TIMEOUT_S)
def test_triage_feedback_export_fine_tune_gate_promote_serve_roll_back(tmp_path):
    steps = Steps()
    home = tmp_path / "home"
    use_fixed_site_key(home)  # fixed pseudonyms, so the same patients are held out every run
    studies = site_studies(PER_CLASS)
    instances = write_instances(studies, tmp_path / "pacs-export")
    service = start(home)
    steps.done("site studies written, service started")
    try:
        answers = [service.triage(to_bytes(study.dataset)) for study in studies]
        assert {a["model"]["version"] for a in answers} == {COMMITTED_VERSION}
        for study, answer in zip(studies, answers):
            reading = "pneumonia" if study.label else "no_pneumonia"
            feedback = httpx.post(f"{service.url}/v1/imaging/results/{answer['id']}/feedback",
                                  json={"reading": reading}, headers=service.headers("radiologist"),
                                  timeout=60)
            assert feedback.status_code == 201, feedback.text
        steps.done(f"{len(studies)} studies triaged and read")

        dataset = tmp_path / "dataset"
        exported = cli(home, "dataset", "export", "--since", date.today().isoformat(),
                       "--instances", str(instances), str(dataset))
        assert exported.returncode == 0, exported.stderr
        split = split_by_patient(read_site_dataset(dataset))
        assert len(split.train) + len(split.held_out) == 2 * PER_CLASS
        steps.done("dataset exported")

        run = tmp_path / "run"
        trained = cli(home, "train", "cxr", "--init-from", str(COMMITTED), "--data", str(dataset),
                      "--limit", "32", "--epochs", "1", "--output", str(run))
        assert trained.returncode == 0, trained.stderr[-2000:]
        steps.done("fine-tuned")

        gated = cli(home, "gate", "cxr", "--candidate", str(run), "--site", str(dataset),
                    "--limit", str(PUBLIC_LIMIT))
        steps.done("gated")
        print(gated.stdout)
        report = json.loads((run / "gate.json").read_text())
        version = report["candidate"]["version"]
        assert gated.returncode == 1 and not report["passed"], gated.stderr[-2000:]
        assert report["reasons"][0].startswith("site: the candidate is not shown better")
        assert report["production"]["version"] == COMMITTED_VERSION
        site, *public = report["comparisons"]
        assert (site["name"], site["images"]) == ("site", len(split.held_out))
        assert site["patients"] == len({r.patient_id for r in split.held_out})
        assert [c["name"] for c in public] == ["paediatric", "adult"]
        assert all(c["images"] <= PUBLIC_LIMIT + 1 for c in public)
        assert (run / f"bundle-{version}" / "gate.json").is_file()

        refused = cli(home, "models", "promote", version)
        assert refused.returncode == 2 and "its gate failed" in refused.stderr
        promoted = cli(home, "models", "promote", version, "--override", "--reason",
                       "learning-loop test", env={"CLINASSIST_API_KEY": service.keys["admin"]})
        assert promoted.returncode == 0, promoted.stderr

        served = service.triage(to_bytes(studies[0].dataset))
        assert served["model"]["version"] == version and version in sr_versions(service, served)

        assert cli(home, "models", "rollback", "--reason", "test").returncode == 0
        back = service.triage(to_bytes(studies[0].dataset))
        assert back["model"]["version"] == COMMITTED_VERSION
        assert back["probability"] == pytest.approx(answers[0]["probability"], abs=1e-6)
        steps.done("promoted, served, rolled back")
    finally:
        service.stop()
