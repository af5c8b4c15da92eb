"""`CLINASSIST_API_WORKERS`: the public API in several processes that share the home (one
hash-chained audit trail, written by all of them), and a bad value refused before anything
starts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from service_process import cli, start
from clinassist.serving.security import AuditTrail

REVIEW = {"patient": {"age": 78, "sex": "female", "egfr": 38},
          "medications": [{"name": "warfarin"}, {"name": "Advil"}, {"name": "simvastatin"},
                          {"name": "clarithromycin"}]}
REVIEWS = 48


def api_worker_pids(root: int) -> set[int]:
    pids = set()
    for process in psutil.Process(root).children(recursive=True):
        command = process.cmdline()
        if "--service-name" in command and command[command.index("--service-name") + 1] == \
                "clinassist":
            pids.add(process.pid)
    return pids


def test_two_api_workers_answer_together_and_audit_every_request_in_one_chain(tmp_path):
    home = tmp_path / "home"
    service = start(home, env={"CLINASSIST_API_WORKERS": "2"})
    try:
        assert len(api_worker_pids(service.process.pid)) == 2
        before = len(AuditTrail(home).records())

        def review(_: int) -> int:
            return httpx.post(service.url + "/v1/medication/risk", json=REVIEW, timeout=60,
                              headers=service.headers("pharmacist")).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(review, range(REVIEWS)))
    finally:
        service.stop()
    assert statuses == [200] * REVIEWS
    trail = AuditTrail(home)
    reviews = [record for record in trail.records()[before:]
               if record.resource == "/v1/medication/risk"]
    assert len(reviews) == REVIEWS and all(record.outcome == "200" for record in reviews)
    assert trail.verify().ok


@pytest.mark.parametrize("setting", ["CLINASSIST_API_WORKERS", "CLINASSIST_MAX_BATCH_SIZE"])
@pytest.mark.parametrize("value", ["two", "0"])
def test_a_bad_process_or_batch_count_stops_serve_with_its_name(tmp_path, setting, value):
    outcome = cli(tmp_path, "serve", "--port", "1", env={setting: value})
    assert outcome.returncode == 2, outcome
    assert f"{setting} must be a whole number of at least 1; got {value!r}" in outcome.stderr
    assert "Traceback" not in outcome.stderr
