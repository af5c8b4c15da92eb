"""Site calibration end to end: adult radiographs written as DICOM by the test, a labels CSV,
`clinassist calibrate site`, an audited versioned overlay that the pipeline then decides with,
and clear refusals of unusable input."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from dicom_fixtures import synthetic_cr, to_bytes
from store_sql import raw
from clinassist.cli import main
from clinassist.serving.imaging.site_calibration import ModelIdentity, SiteCalibrationStore
from clinassist.serving.imaging.triage import Models, Pipeline
from clinassist.serving.security import AuditTrail
from clinassist.serving.storage import DATABASE_URL_ENV
from clinassist.site_calibration import MIN_CASES_PER_CLASS
from clinassist.training import nih_adult_data

CASES_PER_CLASS = MIN_CASES_PER_CLASS + 10  # a margin for images that pixel QC rejects


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, Path]:
    """A site's labelled adult studies: NIH validation-patient images (never test patients) as
    8-bit CR instances aged 45, and the labels CSV; plus one unreadable file."""
    folder = tmp_path_factory.mktemp("site")
    records = nih_adult_data.make_splits(nih_adult_data.read_manifest()).val
    chosen = [r for label in (0, 1) for r in [r for r in records if r.label == label and r.adult]
              [:CASES_PER_CLASS]]
    pixels = nih_adult_data.load_pixels(chosen)
    rows = []
    for index, (record, image) in enumerate(zip(chosen, pixels)):
        ds = synthetic_cr(pixels=image, bits_stored=8, PatientAge="045Y",
                          ViewPosition=record.view, PatientID=f"SITE{index}")
        (folder / f"{index}.dcm").write_bytes(to_bytes(ds))
        rows.append({"sop_instance_uid": ds.SOPInstanceUID,
                     "label": "pneumonia" if record.label else "normal"})
    (folder / "broken.dcm").write_bytes(b"not a dicom file")
    labels = folder.parent / f"{folder.name}-labels.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["sop_instance_uid", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return folder, labels


@pytest.fixture(scope="module")
def calibrated(site, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    folder, labels = site
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLINASSIST_HOME", str(home))
        assert main(["calibrate", "site", "--labels", str(labels), str(folder), "--json"]) == 0
    return home


def test_the_overlay_is_versioned_audited_and_leaves_the_bundle_alone(calibrated):
    store = SiteCalibrationStore(calibrated, "cxr_pneumonia")
    assert store.versions() == [1] and store.active_version() == 1
    overlay = store.read(1)
    assert list(overlay["populations"]) == ["adult"]  # no children among the site's cases
    adult = overlay["populations"]["adult"]
    assert adult["cases"] + overlay["failed_qc"] == 2 * CASES_PER_CLASS
    assert overlay["failed_qc"] <= 3 and overlay["unreadable"] == 1
    for part in ("before", "after_cross_fitted"):
        low, high = adult[part]["sensitivity_at_threshold"]["ci95"]
        assert low <= adult[part]["sensitivity_at_threshold"]["value"] <= high
    (row,) = [r for r in AuditTrail(calibrated).records()
              if r.resource == "site-calibration/cxr_pneumonia/v1"]
    assert row.action == "models:manage" and f"{adult['cases']} adult cases" in row.detail
    assert not (Path("models") / "cxr_pneumonia" / "site_calibration").exists()


def test_the_pipeline_decides_with_the_overlay_and_a_borderline_case_flips(site, calibrated):
    models = Models.load()
    description = models.describe(calibrated)
    site_point = description.operating_points().for_age(45)
    bundle_point = models.describe(calibrated / "elsewhere").operating_points().for_age(45)
    assert site_point.source == "site-calibration" and site_point.site_calibration_version == 1
    assert bundle_point.source == "bundle"
    # the logit halfway between the two decision boundaries is flagged by exactly one of them
    boundary = [p.temperature * np.log(p.threshold / (1 - p.threshold))
                for p in (site_point, bundle_point)]
    borderline = float(np.mean(boundary))

    async def infer(images):
        return [{**models.infer(images)[0], "logit": borderline}]

    def triage(instance: bytes, home: Path):
        return asyncio.run(Pipeline(models.describe(home), infer).triage(instance))

    folder, _ = site
    instance = next(data for data in (path.read_bytes() for path in sorted(folder.glob("*.dcm")))
                    if data.startswith(b"\0" * 128 + b"DICM")
                    and triage(data, calibrated).result.qc_passed)  # one pixel QC accepts
    flags = {}
    for name, home in (("site", calibrated), ("bundle", calibrated / "elsewhere")):
        result = triage(instance, home)
        flags[name] = result.result.flag
        assert result.summary()["operating_point"]["source"] == (
            "site-calibration" if name == "site" else "bundle")
    assert flags["site"] != flags["bundle"] and None not in flags.values()


def test_show_and_remove_are_audited_and_the_bundle_point_returns(calibrated, monkeypatch, capsys):
    monkeypatch.setenv("CLINASSIST_HOME", str(calibrated))
    assert main(["calibrate", "site", "--show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    assert main(["calibrate", "site", "--remove"]) == 0
    assert "v1 removed" in capsys.readouterr().out
    assert SiteCalibrationStore(calibrated, "cxr_pneumonia").active_version() is None
    point = Models.load().describe(calibrated).operating_points().for_age(45)
    assert point.source == "bundle"
    assert any(r.resource == "site-calibration/cxr_pneumonia/v1" and r.detail == "removed"
               for r in AuditTrail(calibrated).records())


def test_too_few_cases_are_refused_with_the_minimum_needed(site, tmp_path, monkeypatch, capsys):
    folder, labels = site
    few = tmp_path / "few.csv"
    few.write_text("\n".join(labels.read_text().splitlines()[:11]) + "\n")
    monkeypatch.setenv("CLINASSIST_HOME", str(tmp_path / "home"))
    assert main(["calibrate", "site", "--labels", str(few), str(folder)]) == 2
    error = capsys.readouterr().err
    assert f"at least {MIN_CASES_PER_CLASS} normal and {MIN_CASES_PER_CLASS} pneumonia" in error
    assert "0 pneumonia" in error and "1 unreadable" in error


def test_one_class_only_and_bad_labels_are_refused(site, tmp_path, monkeypatch, capsys):
    folder, labels = site
    monkeypatch.setenv("CLINASSIST_HOME", str(tmp_path / "home"))
    normals = tmp_path / "normals.csv"
    normals.write_text("\n".join(line for line in labels.read_text().splitlines()
                                 if not line.endswith("pneumonia")) + "\n")
    assert main(["calibrate", "site", "--labels", str(normals), str(folder)]) == 2
    assert "0 pneumonia" in capsys.readouterr().err
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("sop_instance_uid,label\n1.2.3,maybe\n")
    assert main(["calibrate", "site", "--labels", str(wrong), str(folder)]) == 2
    assert "lines [2]" in capsys.readouterr().err
    assert main(["calibrate", "site", "--labels", str(tmp_path / "absent.csv"), str(folder)]) == 2
    assert "not found" in capsys.readouterr().err


IDENTITY = ModelIdentity("cxr_pneumonia", "2.0.0", "ab" * 32)


def overlay(threshold: float) -> dict:
    return {"model": IDENTITY.__dict__, "populations": {"adult": {"threshold": threshold}}}


def test_the_store_keeps_every_version_and_which_is_in_force(tmp_path, database):
    store = SiteCalibrationStore(tmp_path / "home", "cxr_pneumonia")
    assert (store.versions(), store.active_version(), store.active(IDENTITY)) == ([], None, None)
    assert [store.save(overlay(t)) for t in (0.3, 0.4)] == [1, 2]
    assert store.active(IDENTITY)["populations"]["adult"]["threshold"] == 0.4
    assert store.active(ModelIdentity("cxr_pneumonia", "2.0.0", "cd" * 32)) is None  # other file
    assert (store.remove(), store.remove()) == (2, None)
    assert store.versions() == [1, 2] and store.active_version() is None
    assert store.read(1)["version"] == 1
    with raw(store._db, database) as db, pytest.raises(Exception, match="append-only"):
        db.execute("UPDATE overlays SET overlay = '{}'")


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # shared by machines
def test_replicas_on_one_database_decide_with_the_same_overlay(tmp_path, database):
    SiteCalibrationStore(tmp_path / "home-a", "cxr_pneumonia").save(overlay(0.3))
    assert SiteCalibrationStore(tmp_path / "home-b", "cxr_pneumonia").active_version() == 1


def test_an_earlier_releases_overlay_files_are_taken_over(tmp_path, monkeypatch):
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)  # only SQLite homes are that old
    folder = tmp_path / "home" / "site_calibration" / "cxr_pneumonia"
    folder.mkdir(parents=True)
    for version in (1, 2):
        (folder / f"v{version}.json").write_text(json.dumps({**overlay(0.1 * version),
                                                             "version": version}))
    (folder / "active.json").write_text(json.dumps({"version": 1}))
    store = SiteCalibrationStore(tmp_path / "home", "cxr_pneumonia")
    assert store.versions() == [1, 2] and store.active_version() == 1
    assert store.save(overlay(0.5)) == 3
    assert SiteCalibrationStore(tmp_path / "home", "cxr_pneumonia").versions() == [1, 2, 3]
