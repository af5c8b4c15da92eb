"""The monitoring collectors on the started service's `/metrics` (BentoML's Prometheus endpoint)."""

from __future__ import annotations

import asyncio
import io
import re
import time

import httpx
import numpy as np
import pydicom

from dicom_fixtures import real_cr, to_bytes
from clinassist.serving.imaging.monitoring import MIN_DRIFT_SAMPLES

MAX_TRIAGES_FOR_DRIFT = MIN_DRIFT_SAMPLES + 20


def metrics(service) -> str:
    return httpx.get(service.url + "/metrics", timeout=30).text


def value(text: str, name: str, **labels) -> float | None:
    """The sample `name{labels...}` in a Prometheus exposition, or None."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            return float(match.group(2))
    return None


def edited_cr(change) -> bytes:
    """The real CR with its pixels changed by `change` (the header follows the new shape)."""
    ds = pydicom.dcmread(io.BytesIO(real_cr()))
    pixels = np.ascontiguousarray(change(ds.pixel_array))
    ds.PixelData, (ds.Rows, ds.Columns) = pixels.tobytes(), pixels.shape
    return to_bytes(ds)


def test_scores_flags_and_qc_rejections_are_counted(service):
    before = metrics(service)
    scored = service.triage(real_cr())
    rejected = service.triage(edited_cr(np.rot90))
    assert not rejected["qc"]["passed"]
    after = metrics(service)
    flag = scored["flag"]
    assert (value(after, "clinassist_triage_flags_total", flag=flag) or 0) == \
        (value(before, "clinassist_triage_flags_total", flag=flag) or 0) + 1
    reason = "pixel-rotated-90"
    assert (value(after, "clinassist_triage_qc_rejections_total", reason=reason) or 0) == \
        (value(before, "clinassist_triage_qc_rejections_total", reason=reason) or 0) + 1
    assert value(after, "clinassist_triage_score_count") >= 1
    assert value(after, "clinassist_triage_score_bucket", le="1.0") >= 1
    assert 0 <= value(after, "clinassist_triage_flag_rate") <= 1


def test_readings_and_agreement_are_exposed(service):
    scored = service.triage(real_cr())
    response = httpx.post(f"{service.url}/v1/imaging/results/{scored['id']}/feedback",
                          json={"reading": "pneumonia"}, headers=service.headers("radiologist"))
    assert response.status_code == 201
    text = metrics(service)
    assert value(text, "clinassist_feedback_readings_total", reading="pneumonia") >= 1
    sensitivity = value(text, "clinassist_feedback_agreement", measure="sensitivity")
    assert sensitivity is not None and 0 <= sensitivity <= 1


def test_the_drift_statistic_appears_once_enough_triages_are_in(service):
    """PSI needs MIN_DRIFT_SAMPLES triages; send bursts until it shows, within a bound (the real
    CR at an eighth of its size, so each triage is quick)."""
    data = edited_cr(lambda pixels: pixels[::8, ::8])

    async def burst(count: int) -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            answers = await asyncio.gather(*(client.post(
                service.url + "/v1/imaging/triage", content=data,
                headers={**service.headers("radiologist"), "Content-Type": "application/dicom"})
                for _ in range(count)))
        assert all(a.status_code == 200 for a in answers)

    sent, deadline = 0, time.monotonic() + 600
    while (psi := value(metrics(service), "clinassist_drift_psi", feature="mean_intensity")) \
            is None and sent < MAX_TRIAGES_FOR_DRIFT and time.monotonic() < deadline:
        asyncio.run(burst(10))
        sent += 10
    assert psi is not None, f"no drift statistic after {sent} more triages"
    # one radiograph sent over and over is as far from a validation set as data can be
    assert psi > 1
