"""Chest-radiograph triage of one DICOM instance: header QC, pixel QC, score, result objects.

Independent of BentoML, so the HTTP service and a DICOM gateway share it. Inference goes
through an `infer` callable taking a list of display-ready images, so the caller decides how
requests are batched.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import numpy as np
from pydicom import Dataset

from clinassist.bundle import Bundle, read_metadata
from clinassist.config import home_dir
from clinassist.errors import ClinassistError
from clinassist.serving.dicom import (Finding, Limits, TriageResult, build_secondary_capture,
                                      build_sr, check_header, patient_age_years,
                                      radiograph_pixels, read_instance)
from clinassist.serving.dicom.referable import check_referable
from clinassist.serving.dicom.results import Flag
from clinassist.serving.imaging.allocator import IdleTrim, cap_arenas, keep_freed_memory
from clinassist.serving.imaging.model_registry import (ProductionFollower, production_dir,
                                                       version_metadata)
from clinassist.serving.imaging.operating_points import (OperatingPoint, OperatingPoints,
                                                         population_caution)
from clinassist.serving.imaging.results_store import dicom_bytes
from clinassist.serving.imaging.site_calibration import ModelIdentity, SiteCalibrationStore

Inference = dict[str, object]
T = TypeVar("T")
Infer = Callable[[list[np.ndarray]], Awaitable[list[Inference]]]
# The study's worklist priority with this result, for the SR (None: leave it out).
StudyPriority = Callable[[Dataset, TriageResult], Flag | None]

CXR_BUNDLE, QC_BUNDLE = "cxr_pneumonia", "qc_radiograph"
# Decoding and encoding run on these few long-lived threads, shared by every request and event
# loop of the process: the event loop keeps serving, and each radiograph's tens of megabytes of
# temporaries stay in the malloc arenas of a thread per core. Spread over short-lived or
# dozens of pool threads (asyncio's and anyio's), glibc kept a high-water mark per thread's
# arena: an API worker grew from 276 to 1,125 MiB over 120 triages at concurrency 8, with
# the live Python and NumPy objects flat (tracemalloc).
cap_arenas()  # before the threads below: they and the event loops' pools share two arenas
keep_freed_memory()  # until QUIET trims it
CPU_WORK = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="triage")
QUIET = IdleTrim()  # the freed temporaries go back to the system once triage or inference pauses
PIXEL_QC_MESSAGES = {
    "rotated_90": "The image appears rotated by 90 degrees; send it upright.",
    "rotated_180": "The image appears upside down; send it upright.",
    "rotated_270": "The image appears rotated by 270 degrees; send it upright.",
    "flipped_left_right": "The image appears mirrored left to right.",
    "inverted": "The image appears inverted (bone dark); check the photometric interpretation.",
    "not_chest_radiograph": "The pixels do not look like a frontal chest radiograph.",
}


class ModelBusy(ClinassistError):
    """Inference is shedding load; the caller should retry later."""


class Models:
    """The triage and pixel-QC bundles, run together over a batch of images. Loaded with
    `load`, the triage bundle is the registry's production version, followed as it changes."""

    def __init__(self, cxr: Bundle, qc: Bundle, production: ProductionFollower | None = None):
        self._cxr, self.qc, self._production = cxr, qc, production

    @classmethod
    def load(cls, threads: int | None = None, home: Path | None = None) -> "Models":
        production = ProductionFollower(home or home_dir(), threads)
        return cls(production.bundle, Bundle.load(QC_BUNDLE, threads), production)

    @property
    def cxr(self) -> Bundle:
        if self._production is not None:
            self._cxr = self._production.current()
        return self._cxr

    def infer(self, images: list[np.ndarray]) -> list[Inference]:
        """Score every image; images of the same shape share one ONNX Runtime call. Each result
        names the triage model version that scored it."""
        with QUIET.busy():
            return self._infer(images)

    def _infer(self, images: list[np.ndarray]) -> list[Inference]:
        cxr = self.cxr  # one version for the whole call, even if the registry changes meanwhile
        by_shape: dict[tuple, list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            by_shape[image.shape].append(index)
        results: list[Inference] = [{} for _ in images]
        for indices in by_shape.values():
            # A lone image is only viewed as (1, 1, H, W): a radiograph is tens of megabytes.
            batch = (images[indices[0]][None, None] if len(indices) == 1 else
                     np.stack([images[i] for i in indices])[:, None]).astype(np.float32,
                                                                            copy=False)
            scored = cxr.run(image=batch)
            qc = self.qc.run(image=batch)["probabilities"]
            for row, index in enumerate(indices):
                results[index] = {"logit": float(scored["logit"][row]),
                                  "cam": scored["cam"][row, 0], "qc": qc[row],
                                  "batch_size": len(indices), "model_version": cxr.version}
        return results

    def describe(self, home: Path) -> "Description":
        return Description(self.cxr.metadata, self.qc.metadata, home)


class Description:
    """What the pipeline reports and decides with: the two bundles' metadata and the operating
    points in force, which follow the site calibration overlay in `home` as it changes."""

    def __init__(self, cxr: dict, qc: dict, home: Path) -> None:
        self.model = {"name": cxr["name"], "version": cxr["version"]}
        self.qc_model = {"name": qc["name"], "version": qc["version"]}
        self.qc_classes: list[str] = qc["classes"]
        self._cxr, self._qc, self._home = cxr, qc, home
        self._identity = ModelIdentity.of(cxr)
        self._site = SiteCalibrationStore(home, cxr["name"])
        self._points: tuple[int | None, OperatingPoints] | None = None
        self._versions: dict[str, Description] = {cxr["version"]: self}

    def of_version(self, version: str | None) -> "Description":
        """The description of the triage model version that scored an image (the model service
        follows the registry, so it may have moved on since this one was made)."""
        if version is None:
            return self
        if version not in self._versions:
            self._versions[version] = Description(version_metadata(self._home, version),
                                                  self._qc, self._home)
        return self._versions[version]

    def operating_points(self) -> OperatingPoints:
        """The bundle's points overlaid by the active site calibration (re-read when it changes)."""
        version = self._site.active_version()
        if self._points is None or self._points[0] != version:
            overlay = self._site.active(self._identity)
            self._points = (version, OperatingPoints.from_metadata(self._cxr, overlay))
        return self._points[1]


def describe_bundles(home: Path) -> Description:
    """`Description` of the production triage bundle and the QC bundle, reading only their
    metadata (no model loaded)."""
    return Description(read_metadata(production_dir(home))[1], read_metadata(QC_BUNDLE)[1], home)


@dataclass
class Triage:
    """The outcome for one instance: what the API returns and the objects sent back to PACS."""

    source: Dataset
    findings: list[Finding]
    result: TriageResult
    pixel_qc: dict | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    batch_size: int = 0
    sr: Dataset | None = None
    sc: Dataset | None = None
    operating_point: OperatingPoint | None = None
    objects: dict[str, bytes] = field(default_factory=dict)  # "sr", "sc": Part 10, written once
    pixels: np.ndarray | None = None  # the display-ready image, for monitoring and the SC
    report: TriageResult | None = None  # what the SR says: `result` with the study's priority

    def summary(self) -> dict:
        point = self.operating_point
        return {
            "study_instance_uid": str(self.source.StudyInstanceUID),
            "series_instance_uid": str(self.source.SeriesInstanceUID),
            "sop_instance_uid": str(self.source.SOPInstanceUID),
            "qc": {"passed": self.result.qc_passed,
                   "reasons": [{"code": f.code, "message": f.message, "blocking": f.blocking}
                               for f in self.findings],
                   "pixel_qc": self.pixel_qc},
            "probability": self.result.probability,
            "flag": self.result.flag,
            "threshold": self.result.threshold,
            "model": {"name": self.result.model_name, "version": self.result.model_version},
            "operating_point": point.as_json() if point is not None else None,
            "timings_ms": self.timings_ms,
            "batch_size": self.batch_size,
        }


def pixel_qc_finding(qc_probabilities: np.ndarray, classes: list[str]) -> tuple[Finding | None, dict]:
    best = int(np.argmax(qc_probabilities))
    verdict = {"class": classes[best], "probability": float(qc_probabilities[best])}
    if best == 0:
        return None, verdict
    return Finding(f"pixel-{classes[best].replace('_', '-')}", PIXEL_QC_MESSAGES[classes[best]],
                   True), verdict


@dataclass
class Assessment:
    """One instance decoded, checked and scored, before any operating point is applied."""

    source: Dataset
    age_years: float | None
    findings: list[Finding]
    pixels: np.ndarray
    inference: Inference
    pixel_qc: dict

    @property
    def passed_qc(self) -> bool:
        return not any(f.blocking for f in self.findings)

    @property
    def logit(self) -> float:
        return float(self.inference["logit"])


class Pipeline:
    """Decode, check and score instances, then build their SR and Secondary Capture."""

    def __init__(self, description: Description, infer: Infer, limits: Limits | None = None):
        self.description, self.infer = description, infer
        self.limits = limits or Limits.from_env()

    async def assess(self, data: bytes, clock: "Stopwatch | None" = None) -> Assessment:
        """Raises `DicomRejection` for input that is not a usable DICOM instance."""
        clock = clock or Stopwatch()
        source, age, findings, pixels = await in_cpu_work(self._decode, data)
        clock.lap("decode")
        inference = (await self.infer([pixels]))[0]
        clock.lap("inference")
        pixel_finding, verdict = pixel_qc_finding(np.asarray(inference["qc"]),
                                                  self.description.qc_classes)
        if pixel_finding is not None:
            findings = [pixel_finding, *findings]
        return Assessment(source, age, findings, pixels, inference, verdict)

    def _decode(self, data: bytes) -> tuple[Dataset, float | None, list[Finding], np.ndarray]:
        source = read_instance(data, self.limits)
        check_referable(source)  # before any work: the SR and SC are filed and cite it
        age = patient_age_years(source)
        findings = check_header(source)
        if (caution := population_caution(age)) is not None:
            findings.append(caution)
        return source, age, findings, radiograph_pixels(source)

    async def triage(self, data: bytes) -> Triage:
        """Raises `DicomRejection` for input that is not a usable DICOM instance."""
        with QUIET.busy():
            clock = Stopwatch()
            triage = await self._decide(data, None, clock)
            await self._encode(triage)
            clock.lap("encode")
            triage.timings_ms = clock.laps
            return triage

    async def decide(self, data: bytes, study_priority: StudyPriority | None = None) -> Triage:
        """`triage` without the result objects (`object_builder` builds them from the stored
        instance, for `Triage.report`). `study_priority`, if given, puts the study's worklist
        priority into that report."""
        with QUIET.busy():
            clock = Stopwatch()
            triage = await self._decide(data, study_priority, clock)
            triage.timings_ms = clock.laps
            return triage

    async def _decide(self, data: bytes, study_priority: StudyPriority | None,
                      clock: Stopwatch) -> Triage:
        assessed = await self.assess(data, clock)
        description = self.description.of_version(assessed.inference.get("model_version"))
        point = description.operating_points().for_age(assessed.age_years)
        result = self.result(assessed, point, description)
        report = result if study_priority is None else replace(
            result, study_priority=study_priority(assessed.source, result))
        return Triage(assessed.source, assessed.findings, result, assessed.pixel_qc,
                      batch_size=assessed.inference["batch_size"], operating_point=point,
                      pixels=assessed.pixels, report=report)

    async def _encode(self, triage: Triage) -> None:
        # Both objects at once: the SR is Python, the picture mostly Pillow's C (no GIL).
        (triage.sr, sr_bytes), (triage.sc, sc_bytes) = await asyncio.gather(
            in_cpu_work(_encoded, build_sr, triage.source, triage.report or triage.result),
            in_cpu_work(_encoded, build_secondary_capture, triage.source, triage.pixels,
                        triage.result))
        triage.objects = {"sr": sr_bytes, "sc": sc_bytes}

    def result(self, assessed: Assessment, point: OperatingPoint,
               description: Description | None = None) -> TriageResult:
        model = (description or self.description).model
        blocking = [(f.code, f.message) for f in assessed.findings if f.blocking]
        cautions = [(f.code, f.message) for f in assessed.findings if not f.blocking]
        common = dict(threshold=point.threshold, model_name=model["name"],
                      model_version=model["version"], operating_point=point.describe())
        if blocking:
            return TriageResult(probability=None, flag=None, qc_passed=False,
                                qc_reasons=blocking, **common)
        probability = point.probability(assessed.logit)
        return TriageResult(probability=probability, qc_passed=True, qc_reasons=cautions,
                            flag="urgent" if probability >= point.threshold else "routine",
                            cam=np.asarray(assessed.inference["cam"]), **common)


def in_cpu_work(function: Callable[..., T], *arguments) -> Awaitable[T]:
    """`function(*arguments)` on the process's CPU_WORK threads, awaited from any loop."""
    return asyncio.get_running_loop().run_in_executor(CPU_WORK, function, *arguments)


def _encoded(build: Callable[..., Dataset], *arguments) -> tuple[Dataset, bytes]:
    ds = build(*arguments)
    return ds, dicom_bytes(ds)


class Stopwatch:
    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round((now - self.last) * 1000, 2)
        self.laps["total"] = round((now - self.start) * 1000, 2)
        self.last = now
