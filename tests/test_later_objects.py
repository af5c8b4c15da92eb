"""Result objects built after the answer: a GET waits for them, and a result whose process died
before building them is built by whoever looks next, the same SR and picture."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import psutil
import pydicom
import pytest

from dicom_fixtures import dciodvfy_errors, real_cr
from test_gateway_support import wait_for
from clinassist.serving.dicom.results import TriageResult
from clinassist.serving.imaging.object_builder import ObjectBuilder
from clinassist.serving.imaging.later_objects import LaterObjects
from clinassist.serving.imaging.results_store import PENDING, SOURCE, Claim, ResultStore
from clinassist.serving.imaging.triage import Models, Pipeline, Triage

TRIAGE = "/v1/imaging/triage"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    home = tmp_path_factory.mktemp("later-objects")
    models = Models.load(home=home)

    async def infer(images):
        return models.infer(images)

    return Pipeline(models.describe(home), infer)


def accepted(pipeline: Pipeline, store: ResultStore) -> tuple[Claim, Triage]:
    triage = asyncio.run(pipeline.decide(real_cr()))
    return store.accept(triage.summary(), store.stage(real_cr()), triage.result), triage


def sr_probability(data: bytes) -> float:
    def items(node):
        for item in node.get("ContentSequence", []):
            yield item
            yield from items(item)

    return next(float(item.MeasuredValueSequence[0].NumericValue)
                for item in items(pydicom.dcmread(io.BytesIO(data)))
                if item.ConceptNameCodeSequence[0].CodeMeaning == "Probability")


def test_a_result_record_gives_back_the_same_result(pipeline):
    result = asyncio.run(pipeline.decide(real_cr())).result
    again = TriageResult.from_record(json.loads(json.dumps(result.as_record())))
    assert again.cam is not None and again.cam.dtype == result.cam.dtype
    assert np.array_equal(again.cam, result.cam)
    assert {**vars(again), "cam": None} == {**vars(result), "cam": None}


def test_a_result_its_process_left_pending_is_built_by_the_next_to_look(pipeline, tmp_path):
    store = ResultStore(tmp_path)
    claim, triage = accepted(pipeline, store)
    result_id = claim.result_id
    assert json.loads(store.read(result_id, "json"))["probability"] == triage.result.probability
    assert store.read(result_id, "sr") is None and store.pending() == [result_id]
    assert store.claim(result_id) is None  # its process is alive and building
    claim.release()  # that process dies before building: the kernel drops its lock

    assert asyncio.run(LaterObjects(ResultStore(tmp_path)).recover()) == 1
    assert store.pending() == [] and not store.is_pending(result_id)
    assert not (tmp_path / result_id / SOURCE).exists()  # the radiograph goes once built
    assert store.claim(result_id) is None  # complete
    inline = asyncio.run(pipeline.triage(real_cr()))  # objects built before answering
    for kind in ("sr", "sc"):
        path = tmp_path / f"{kind}.dcm"
        path.write_bytes(store.read(result_id, kind))
        assert dciodvfy_errors(path) == []
    assert sr_probability(store.read(result_id, "sr")) == pytest.approx(
        triage.result.probability, abs=1e-6)
    recovered = pydicom.dcmread(io.BytesIO(store.read(result_id, "sc"))).pixel_array
    assert np.array_equal(recovered, pydicom.dcmread(io.BytesIO(inline.objects["sc"])).pixel_array)


def test_a_result_whose_process_died_after_writing_its_objects_is_complete_at_the_next_look(
        pipeline, tmp_path):
    store = ResultStore(tmp_path)
    claim, _ = accepted(pipeline, store)
    objects = asyncio.run(pipeline.triage(real_cr())).objects
    for kind, name in (("sr", "sr.dcm"), ("sc", "sc.dcm")):
        (tmp_path / claim.result_id / name).write_bytes(objects[kind])
    (tmp_path / claim.result_id / SOURCE).unlink()  # the crash: between source and pending.json
    claim.release()

    assert asyncio.run(LaterObjects(ResultStore(tmp_path)).recover()) == 0  # nothing to build
    assert store.pending() == [] and store.read(claim.result_id, "sc") == objects["sc"]


def test_a_get_waits_for_the_objects_being_built_after_the_answer(service, tmp_path):
    answer = httpx.post(service.url + TRIAGE, content=real_cr(), timeout=120,
                        headers={**service.headers("radiologist"),
                                 "Content-Type": "application/dicom"}).json()
    assert "encode" not in answer["timings_ms"]  # answered before the objects were built
    for kind in ("sr", "sc"):
        response = httpx.get(service.url + answer["objects"][kind], timeout=60,
                             headers=service.headers("radiologist"))
        assert response.status_code == 200
        (tmp_path / kind).write_bytes(response.content)
        assert dciodvfy_errors(tmp_path / kind) == []
    assert sr_probability((tmp_path / "sr").read_bytes()) == pytest.approx(answer["probability"],
                                                                           abs=1e-6)
    assert not (service.home / "results" / answer["id"] / PENDING).exists()


def test_a_refused_instance_leaves_nothing_in_the_results_folder(service):
    """Its instance was staged while it was being checked; the staging goes once refused."""
    results = service.home / "results"
    before = sorted(os.listdir(results))
    response = httpx.post(service.url + TRIAGE, content=b"not a DICOM file " * 200, timeout=60,
                          headers={**service.headers("radiologist"),
                                   "Content-Type": "application/dicom"})
    assert response.status_code == 400
    wait_for(lambda: sorted(os.listdir(results)) == before, 10,  # once its write has ended
             "the refused instance's staging folder to go")


def test_a_get_builds_the_objects_a_dead_replica_left_pending(service, pipeline):
    store = ResultStore(service.home / "results")  # the folder every replica shares
    claim, triage = accepted(pipeline, store)
    claim.release()  # the replica that accepted it is gone
    response = httpx.get(f"{service.url}/v1/imaging/results/{claim.result_id}/sr", timeout=60,
                         headers=service.headers("radiologist"))
    assert response.status_code == 200
    assert sr_probability(response.content) == pytest.approx(triage.result.probability,
                                                             abs=1e-6)
    assert not store.is_pending(claim.result_id)


BUILDER_OWNER = """
import os, signal, sys, time
from clinassist.serving.imaging.object_builder import builder
pool = builder()
first = pool.submit(int)
if sys.argv[1] == "built":
    first.result()
print(*pool._processes, flush=True)
if sys.argv[1] == "starting":  # killed while its builder is still importing
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(120)
"""


@pytest.mark.parametrize("when", ["built", "starting"])
def test_the_builder_process_ends_with_the_api_worker_even_killed(when):
    owner = subprocess.Popen([sys.executable, "-c", BUILDER_OWNER, when], stdout=subprocess.PIPE,
                             text=True)
    try:
        builder_pid = int(owner.stdout.readline())
        assert psutil.pid_exists(builder_pid)
    finally:
        owner.kill()  # SIGKILL: no chance to stop its children
        owner.wait()
    wait_for(lambda: not psutil.pid_exists(builder_pid), 20, "the builder to end")


def test_a_builder_that_died_is_replaced_and_builds_the_same_objects(pipeline, tmp_path):
    store = ResultStore(tmp_path)
    claim, triage = accepted(pipeline, store)
    source, record = store.source_path(claim.result_id), triage.result.as_record()
    objects = ObjectBuilder()
    try:
        first = objects.build(source, record)
        (builder_pid,) = objects._pool._processes
        os.kill(builder_pid, signal.SIGKILL)  # out of memory, say
        wait_for(lambda: not psutil.pid_exists(builder_pid), 20, "the builder to die")
        again = objects.build(source, record)
    finally:
        objects.stop()
    assert sr_probability(again["sr"]) == sr_probability(first["sr"])
    sc_pixels = [pydicom.dcmread(io.BytesIO(built["sc"])).pixel_array for built in (first, again)]
    assert np.array_equal(*sc_pixels)


def test_recovery_removes_staging_left_by_a_dead_process_but_not_a_recent_one(tmp_path):
    store = ResultStore(tmp_path)
    abandoned, recent = store.stage(b"instance"), store.stage(b"instance")
    hours_ago = time.time() - 2 * 3600
    os.utime(abandoned.folder, (hours_ago, hours_ago))
    assert asyncio.run(LaterObjects(store).recover()) == 0
    assert not abandoned.folder.exists() and recent.folder.exists()
