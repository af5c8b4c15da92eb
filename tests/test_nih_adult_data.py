"""The adult NIH set: checked manifest, a fixed patient-grouped split, and test patients that
never reach training, checkpoint selection or calibration."""

import shutil
from collections import Counter

import numpy as np
import pytest

from clinassist.training import cxr_populations, cxr_train, nih_adult_data
from clinassist.training.cxr_data import DataError
from clinassist.training.trainer import load_config


@pytest.fixture(scope="module")
def adult_records():
    return nih_adult_data.read_manifest()


@pytest.fixture(scope="module")
def splits(adult_records):
    return nih_adult_data.make_splits(adult_records)


def test_manifest_matches_the_dataset_card(adult_records):
    counts = Counter((r.label, r.view) for r in adult_records)
    assert counts == {(0, "AP"): 342, (0, "PA"): 158, (1, "AP"): 219, (1, "PA"): 272}
    assert sum(r.adult for r in adult_records) == 428 + 468
    assert len({r.patient_id for r in adult_records}) == 676


def test_no_patient_is_in_two_parts(splits):
    patients = [{r.patient_id for r in getattr(splits, part)} for part in ("train", "val", "test")]
    assert not patients[0] & patients[1] and not patients[0] & patients[2]
    assert not patients[1] & patients[2]
    assert sum(len(getattr(splits, part)) for part in ("train", "val", "test")) == 991


def test_the_split_is_fixed_and_stratified_by_label_and_view(adult_records, splits):
    again = nih_adult_data.make_splits(list(reversed(adult_records)))
    assert {r.path for r in again.test} == {r.path for r in splits.test}
    assert [len(splits.train), len(splits.val), len(splits.test)] == [557, 186, 248]
    overall = Counter(nih_adult_data.strata(adult_records))
    for part in (splits.train, splits.val, splits.test):
        share = Counter(nih_adult_data.strata(part))
        for stratum, count in overall.items():
            assert abs(share[stratum] / len(part) - count / 991) < 0.03


def test_a_tampered_manifest_is_refused(tmp_path):
    root = nih_adult_data.dataset_root()
    shutil.copy(root / "SHA256SUMS", tmp_path)
    (tmp_path / "manifest.csv").write_bytes((root / "manifest.csv").read_bytes() + b"\n")
    with pytest.raises(DataError, match="does not match its SHA256SUMS"):
        nih_adult_data.read_manifest(tmp_path)


def test_a_missing_image_is_reported(adult_records):
    missing = nih_adult_data.Record(**{**adult_records[0].__dict__, "path": "images/normal/no.png"})
    with pytest.raises(DataError, match="1 image\\(s\\) missing"):
        nih_adult_data.verify_images([adult_records[1], missing])


def test_the_missing_folder_names_the_card(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINASSIST_DATA", str(tmp_path))
    with pytest.raises(DataError, match="nih_adult_cxr"):
        nih_adult_data.read_manifest()


def test_resizing_matches_the_graphs_own_resize(adult_records):
    import torch

    from clinassist.training.cxr_model import Preprocess

    full = nih_adult_data.load_pixels(adult_records[:2])
    small = nih_adult_data.load_pixels(adult_records[:2], size=224)
    assert full.shape == (2, 512, 512) and small.shape == (2, 224, 224) and small.dtype == np.uint8
    graph = Preprocess(224)(torch.from_numpy(full).float().unsqueeze(1))
    ours = Preprocess(224)(torch.from_numpy(small).float().unsqueeze(1))
    assert float((graph - ours).abs().max()) < 0.05  # z-scored units: only uint8 rounding differs


def test_the_adult_schedule_gives_every_label_and_view_the_same_share(splits):
    rng = np.random.default_rng(0)
    schedule = cxr_train.adult_schedule(splits.train, 1000, rng)
    strata = Counter(nih_adult_data.strata(splits.train)[schedule])
    assert sorted(strata.values()) == [250, 250, 250, 250]
    assert len(schedule) == 1000 and set(schedule) == set(range(len(splits.train)))
    assert cxr_train.adult_share_count(0.3, 700) == 300


def test_training_and_calibration_never_load_an_adult_test_patient(splits, monkeypatch):
    test_patients = {r.patient_id for r in splits.test}
    loaded = []
    original = nih_adult_data.load_pixels

    def recording(records, *args, **kwargs):
        loaded.extend(records)
        return original(records, *args, **kwargs)

    monkeypatch.setattr(nih_adult_data, "load_pixels", recording)
    cfg = load_config(cxr_train.DEFAULT_CONFIG.parent / "cxr_pneumonia_pooled.yaml")
    data = cxr_train.prepare_data(cfg)
    cxr_populations.validation_sets(cfg)
    assert loaded and not {r.patient_id for r in loaded} & test_patients
    assert {r.patient_id for r in loaded} <= {r.patient_id for r in splits.train + splits.val}
    assert not {r.split for r in data.splits.train + data.splits.val} - {"train"}
    assert set(data.val_groups.population) == {"paediatric", "adult"}


def test_validation_aucs_on_known_scores():
    groups = cxr_train.ValidationGroups(
        np.array(["paediatric"] * 4 + ["adult"] * 8),
        np.array(["AP"] * 4 + ["AP"] * 4 + ["PA"] * 4))
    targets = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.8, 0.9,  # children: perfect
                       0.1, 0.6, 0.5, 0.9,  # adult AP: 3 of 4 pairs right
                       0.9, 0.8, 0.1, 0.2])  # adult PA: all wrong
    aucs = cxr_train.validation_aucs(scores, targets, groups)
    assert aucs["auc_paediatric"] == 1.0 and aucs["auc_adult_AP"] == 0.75
    assert aucs["auc_adult_PA"] == 0.0 and aucs["worst_auc"] == 0.0
