"""The clinassist BentoML service: `bentoml serve serving.service:Clinassist` (or `clinassist serve`).

Two services: `TriageModel` runs the ONNX bundles with adaptive batching; `Clinassist` is the
public API, a Starlette app mounted at /v1 behind the shared auth and audit middleware. The
DICOM routes take raw bodies, so BentoML's own request parsing never sees them.
"""

from __future__ import annotations

import os

import bentoml
from bentoml.exceptions import ServiceUnavailable
import numpy as np
from starlette.applications import Starlette
from starlette.routing import Route

from clinassist.config import home_dir
from serving import imaging_api
from serving.results_store import ResultStore
from serving.security import AuthAuditMiddleware
from serving.security import Route as Permission
from serving.triage import ModelBusy, Models, Pipeline

MAX_BATCH_SIZE = int(os.environ.get("CLINASSIST_MAX_BATCH_SIZE", "16"))  # 1 turns batching off
MAX_LATENCY_MS = 20_000  # BentoML sheds requests predicted to miss this

PERMISSIONS = [
    Permission("POST", r"/v1/imaging/triage", "imaging:triage"),
    Permission("GET", r"/v1/imaging/results/[0-9a-f]{32}(/(sr|sc|json))?", "imaging:results"),
]

api = Starlette(routes=[
    Route("/imaging/triage", imaging_api.triage, methods=["POST"]),
    Route("/imaging/results/{result_id:str}", imaging_api.result_summary, methods=["GET"]),
    Route("/imaging/results/{result_id:str}/{kind:str}", imaging_api.result_object,
          methods=["GET"]),
])


@bentoml.service(name="triage-model", workers=1)
class TriageModel:
    """ONNX Runtime over the triage and QC bundles; requests arriving together share a batch."""

    def __init__(self) -> None:
        self.models = Models.load()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def infer(self, images: list[np.ndarray]) -> list[dict]:
        return [{"probability": out["probability"], "cam": np.asarray(out["cam"]).tolist(),
                 "qc": np.asarray(out["qc"]).tolist(), "batch_size": out["batch_size"]}
                for out in self.models.infer(images)]


@bentoml.service(name="clinassist", traffic={"timeout": 120})
@bentoml.asgi_app(api, path="/v1")
class Clinassist:
    model = bentoml.depends(TriageModel)

    def __init__(self) -> None:
        api.state.pipeline = Pipeline(Models.load(threads=1).describe(), self.infer)
        api.state.results = ResultStore(home_dir() / "results")

    async def infer(self, images: list[np.ndarray]) -> list[dict]:
        try:
            return await self.model.to_async.infer(images)
        except ServiceUnavailable as busy:
            raise ModelBusy("the model service is overloaded; retry shortly") from busy


Clinassist.add_asgi_middleware(AuthAuditMiddleware, home=home_dir(), routes=PERMISSIONS)
