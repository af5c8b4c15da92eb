"""`/v1/gateway/jobs`: administrators see dead-lettered jobs and send them through again."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from clinassist.serving.gateway import admin_api
from clinassist.serving.gateway.config import GatewayConfig
from clinassist.serving.gateway.gateway import open_queue
from clinassist.serving.security import AuthAuditMiddleware, UserStore
from test_gateway_support import write_config

DEST = "PACS@127.0.0.1:4242"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINASSIST_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def dead_job(home):
    queue = open_queue(home, GatewayConfig.load(write_config(home, max_attempts=1)))
    job_id, _ = queue.receive(b"DICM", "1.2.3", "PACS")
    queue.claim_job()
    queue.processed(job_id, "result", [DEST])
    queue.claim_delivery()
    assert queue.delivery_failed(job_id, DEST, "DeliveryError: down")
    return job_id


@pytest.fixture
def client(home):
    app = FastAPI(middleware=[Middleware(AuthAuditMiddleware, home=home,
                                         routes=admin_api.ROUTES)])
    app.add_api_route("/v1/gateway/jobs", admin_api.jobs, methods=["GET"])
    app.add_api_route("/v1/gateway/jobs/{job_id}/retry", admin_api.retry, methods=["POST"])
    return TestClient(app)


def bearer(home, role):
    _, key = UserStore(home).add(f"user-{role}", role)
    return {"Authorization": f"Bearer {key}"}


def test_admin_lists_dead_jobs_with_their_error(home, client, dead_job):
    answer = client.get("/v1/gateway/jobs?state=dead", headers=bearer(home, "admin")).json()
    assert answer["counts"] == {"dead": 1}
    [job] = answer["jobs"]
    assert (job["id"], job["attempts"], job["last_error"]) == (dead_job, 1, "DeliveryError: down")


def test_admin_retry_queues_the_delivery_again(home, client, dead_job):
    headers = bearer(home, "admin")
    assert client.post(f"/v1/gateway/jobs/{dead_job}/retry", headers=headers).status_code == 200
    assert client.get("/v1/gateway/jobs", headers=headers).json()["counts"] == {"processed": 1}
    again = client.post(f"/v1/gateway/jobs/{dead_job}/retry", headers=headers)
    assert again.status_code == 404 and again.json()["error"] == "not-dead"


def test_unknown_state_is_refused_with_the_valid_ones(home, client, dead_job):
    answer = client.get("/v1/gateway/jobs?state=lost", headers=bearer(home, "admin"))
    assert answer.status_code == 400 and "received, processed, done" in answer.json()["reason"]


def test_without_a_gateway_configuration_the_api_says_so(home, client):
    answer = client.get("/v1/gateway/jobs", headers=bearer(home, "admin"))
    assert answer.status_code == 404 and "gateway.json" in answer.json()["reason"]


@pytest.mark.parametrize("role", ["radiologist", "gateway", "ml_engineer", "pharmacist"])
def test_only_admins_hold_gateway_admin(home, client, dead_job, role):
    headers = bearer(home, role)
    assert client.get("/v1/gateway/jobs", headers=headers).status_code == 403
    assert client.post(f"/v1/gateway/jobs/{dead_job}/retry", headers=headers).status_code == 403
