"""The clinassist BentoML service: `bentoml serve serving.service:Clinassist` (or `clinassist serve`).

Two services: `TriageModel` runs the ONNX bundles with adaptive batching; `Clinassist` is the
public API, a FastAPI app mounted at /v1 (documented in /docs.json) behind the shared auth and audit middleware. The
DICOM routes take raw bodies, so BentoML's own request parsing never sees them.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated

import aiohttp
import bentoml
from bentoml.validators import ContentType
import httpx
import numpy as np
from bentoml.exceptions import ServiceUnavailable
from fastapi import FastAPI

from clinassist.config import api_workers, home_dir, max_batch_size
from clinassist.serving.dicom.quiet import keep_identifiers_out_of_logs
from clinassist.serving.imaging import api as imaging_api
from clinassist.serving.imaging import feedback_api
from clinassist.serving.gateway import admin_api, worklist_api
from clinassist.serving.gateway.queue import JOB_STATES
from clinassist.serving.medication import api as medication_api
from clinassist.serving.medication import cds_api
from clinassist.serving.imaging.later_objects import LaterObjects
from clinassist.serving.imaging.results_store import ResultStore, results_dir
from clinassist.serving.last_resort import LastResort
from clinassist.serving.stopping import AnswerBeforeStopping
from clinassist.serving.security import AuthAuditMiddleware
from clinassist.serving.security import Route as Permission
from clinassist.serving.imaging.triage import ModelBusy, Models, Pipeline, describe_bundles

MAX_BATCH_SIZE = max_batch_size()  # 1: no batching
MAX_LATENCY_MS = 20_000  # BentoML sheds requests predicted to miss this
# The media type stated, so BentoML does not derive it from a JSON schema made anew for every
# response (7.8 % of the model worker's CPU in py-spy).
JSON_LIST = Annotated[list[dict], ContentType("application/json")]

PERMISSIONS = [
    Permission("POST", r"/v1/imaging/triage", "imaging:triage"),
    Permission("GET", r"/v1/imaging/results/[0-9a-f]{32}(/(sr|sc|json))?", "imaging:results"),
    Permission("POST", r"/v1/medication/risk(/fhir)?", "medication:review"),
    Permission("GET", r"/v1/cds-services", "cds:invoke"),
    Permission("POST", r"/v1/cds-services/[A-Za-z0-9._-]+", "cds:invoke"),
    Permission("POST", r"/v1/cds-services/[A-Za-z0-9._-]+/feedback", "cds:feedback"),
    *feedback_api.ROUTES,
    worklist_api.ROUTE,
    *admin_api.ROUTES,
]

api = FastAPI(title="clinassist", docs_url=None, redoc_url=None, openapi_url=None)
api.add_middleware(LastResort)  # inside FastAPI's own error middleware, so the 500 is JSON
api.include_router(feedback_api.router)  # before /imaging/results/{id}/{kind}
api.add_api_route("/imaging/triage", imaging_api.triage, methods=["POST"], tags=["imaging"],
                  openapi_extra=imaging_api.TRIAGE_OPENAPI, responses=imaging_api.ERRORS)
api.add_api_route("/imaging/results/{result_id}", imaging_api.result_summary, methods=["GET"],
                  tags=["imaging"])
api.add_api_route("/imaging/results/{result_id}/{kind}", imaging_api.result_object,
                  methods=["GET"], tags=["imaging"],
                  responses={200: {"content": {imaging_api.DICOM_TYPE: {}}}})
api.add_api_route("/medication/risk", medication_api.medication_risk, methods=["POST"],
                  tags=["medication"], openapi_extra=medication_api.RISK_OPENAPI,
                  responses=medication_api.ERRORS)
api.add_api_route("/medication/risk/fhir", medication_api.medication_risk_fhir, methods=["POST"],
                  tags=["medication"], openapi_extra=medication_api.FHIR_OPENAPI,
                  responses=medication_api.ERRORS)
api.add_api_route("/cds-services", cds_api.cds_discovery, methods=["GET"], tags=["cds-hooks"])
api.add_api_route("/cds-services/{service_id}", cds_api.cds_service, methods=["POST"],
                  tags=["cds-hooks"], openapi_extra=cds_api.HOOK_OPENAPI)
api.add_api_route("/cds-services/{service_id}/feedback", cds_api.cds_feedback, methods=["POST"],
                  tags=["cds-hooks"], openapi_extra=cds_api.FEEDBACK_OPENAPI)
api.add_api_route("/worklist", worklist_api.worklist, methods=["GET"], tags=["worklist"])
api.add_api_route("/gateway/jobs", admin_api.jobs, methods=["GET"], tags=["gateway"],
                  openapi_extra={"parameters": [{"name": "state", "in": "query", "required": False,
                                                 "schema": {"enum": list(JOB_STATES)}}]})
api.add_api_route("/gateway/jobs/{job_id}/retry", admin_api.retry, methods=["POST"],
                  tags=["gateway"])


@bentoml.service(name="triage-model", workers=1)
class TriageModel:
    """ONNX Runtime over the triage and QC bundles; requests arriving together share a batch."""

    def __init__(self) -> None:
        self.models = Models.load()

    @bentoml.api(batchable=MAX_BATCH_SIZE > 1, max_batch_size=max(MAX_BATCH_SIZE, 2),
                 max_latency_ms=MAX_LATENCY_MS)
    def infer(self, images: list[np.ndarray]) -> JSON_LIST:
        return [{"logit": out["logit"], "cam": np.asarray(out["cam"]).tolist(),
                 "qc": np.asarray(out["qc"]).tolist(), "batch_size": out["batch_size"],
                 "model_version": out["model_version"]}
                for out in self.models.infer(images)]


@bentoml.service(name="clinassist", workers=api_workers(), traffic={"timeout": 120})
@bentoml.asgi_app(api, path="/v1")
class Clinassist:
    model = bentoml.depends(TriageModel)

    def __init__(self) -> None:
        keep_identifiers_out_of_logs()
        api.state.pipeline = Pipeline(describe_bundles(home_dir()), self.infer)
        api.state.results = ResultStore(results_dir(home_dir()))
        api.state.later = LaterObjects(api.state.results)
        threading.Thread(target=asyncio.run, args=(api.state.later.recover(),), daemon=True,
                         name="results-left-pending").start()

    async def infer(self, images: list[np.ndarray]) -> list[dict]:
        try:
            try:
                return await self.model.to_async.infer(images)
            except aiohttp.ClientConnectionError:  # mostly a pooled connection the model service
                return await self.model.to_async.infer(images)  # just closed; inference is pure
        except ServiceUnavailable as busy:
            raise ModelBusy("the model service is overloaded; retry shortly") from busy
        except (aiohttp.ClientConnectionError, httpx.TransportError) as gone:  # restarting, or
            # stopping with the service (its socket is gone)
            raise ModelBusy("the model service is not reachable (restarting or stopping); "
                            "retry shortly") from gone


Clinassist.add_asgi_middleware(LastResort)  # first added is outermost: it covers the auth too
Clinassist.add_asgi_middleware(AnswerBeforeStopping)  # a request cut by a stop is audited as 503
Clinassist.add_asgi_middleware(AuthAuditMiddleware, home=home_dir(), routes=PERMISSIONS)
