import shutil

import numpy as np
import pytest

from clinassist.training import cxr_data
from clinassist.training.cxr_data import DataError


def test_manifest_matches_the_dataset_card(records):
    counts = {(s, lab): 0 for s in ("train", "test") for lab in (0, 1)}
    for r in records:
        counts[(r.split, r.label)] += 1
    assert counts == {("train", 0): 1341, ("train", 1): 3875, ("test", 0): 234, ("test", 1): 390}


def test_validation_is_patient_grouped_stratified_and_reproducible(records):
    splits = cxr_data.make_splits(records, 0.125, seed=7)
    train_patients = {r.patient_id for r in splits.train}
    val_patients = {r.patient_id for r in splits.val}
    assert not train_patients & val_patients
    assert not {r.md5 for r in splits.train} & {r.md5 for r in splits.val}
    assert 0.10 < len(splits.val) / (len(splits.train) + len(splits.val)) < 0.15
    train_rate = cxr_data.labels(splits.train).mean()
    assert abs(cxr_data.labels(splits.val).mean() - train_rate) < 0.02
    again = cxr_data.make_splits(records, 0.125, seed=7)
    assert [r.path for r in again.val] == [r.path for r in splits.val]


def test_official_test_split_is_kept_whole_and_apart(records):
    splits = cxr_data.make_splits(records, 0.125, seed=7)
    assert len(splits.test) == 624
    assert all(r.split == "test" for r in splits.test)
    assert all(r.split == "train" for r in splits.train + splits.val)


def test_groups_merge_patients_that_share_an_identical_image():
    a = cxr_data.Record("a.jpeg", "train", 1, "virus", "p1", "same")
    b = cxr_data.Record("b.jpeg", "train", 1, "virus", "p2", "same")
    c = cxr_data.Record("c.jpeg", "train", 0, "normal", "p3", "other")
    groups = cxr_data.patient_groups([a, b, c])
    assert groups[0] == groups[1] != groups[2]


def test_a_tampered_manifest_is_refused(tmp_path):
    root = cxr_data.dataset_root()
    shutil.copy(root / "SHA256SUMS", tmp_path)
    (tmp_path / "manifest.csv").write_bytes((root / "manifest.csv").read_bytes() + b"\n")
    with pytest.raises(DataError, match="does not match its SHA256SUMS"):
        cxr_data.read_manifest(tmp_path)


def test_missing_and_corrupt_images_are_reported(records):
    good = records[0]
    wrong_md5 = cxr_data.Record(**{**good.__dict__, "md5": "0" * 32})
    missing = cxr_data.Record(**{**good.__dict__, "path": "train/NORMAL/absent.jpeg"})
    cxr_data.verify_images([good])
    with pytest.raises(DataError, match="1 image\\(s\\) missing, 1 with a wrong checksum"):
        cxr_data.verify_images([good, wrong_md5, missing])


def test_missing_data_directory_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINASSIST_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="CLINASSIST_DATA"):
        cxr_data.read_manifest()


def test_pixels_are_single_channel_uint8(records):
    pixels = cxr_data.load_pixels(records[:3])
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.uint8
