"""Fine-tuning on a site dataset: the export is read with its checksums, split by patient with a
split that does not move when the export grows, and only the training patients reach training."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from site_fixtures import export_with_feedback, site_studies, use_fixed_site_key
from clinassist.training.cxr_data import DataError
from clinassist.training.site_data import (HELD_OUT_FRACTION, SiteDataset, read_site_dataset,
                                           split_by_patient)

BUNDLE = Path("models/cxr_pneumonia")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    use_fixed_site_key(home)
    return export_with_feedback(home, site_studies(12), home / "dataset")


def patients(records) -> set[str]:
    return {r.patient_id for r in records}


def test_the_split_is_by_patient_and_each_patient_keeps_its_side_as_the_export_changes(site):
    dataset = read_site_dataset(site)
    split = split_by_patient(dataset)
    assert len(split.train) + len(split.held_out) == len(dataset.records) == 24
    assert split.train and split.held_out and not patients(split.train) & patients(split.held_out)
    for subset in (dataset.records[::2], dataset.records[5:]):
        smaller = split_by_patient(SiteDataset(dataset.root, subset, dataset.manifest_sha256))
        assert patients(smaller.held_out) == patients(split.held_out) & patients(subset)
    summary = split.summary()
    assert summary["held_out_fraction"] == HELD_OUT_FRACTION
    assert summary["held_out_patients"] == len(patients(split.held_out))


def test_a_changed_image_or_manifest_is_refused(site, tmp_path):
    copy = shutil.copytree(site, tmp_path / "copy")
    image = next((copy / "images").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    with pytest.raises(DataError, match="1 with a wrong checksum"):
        read_site_dataset(copy)
    with open(copy / "manifest.csv", "a") as manifest:
        manifest.write("images/extra.png,pneumonia,1,X,18-39,F,PA,,2026-01-01,00\n")
    with pytest.raises(DataError, match="does not match its SHA256SUMS"):
        read_site_dataset(copy)
    with pytest.raises(DataError, match="dataset export"):
        read_site_dataset(tmp_path / "absent")


def test_the_images_are_what_the_service_gives_the_model(site):
    dataset = read_site_dataset(site)
    (image,) = dataset.display_ready(dataset.records[:1])
    assert image.dtype == np.float32 and image.shape == (512, 512)
    assert 0 <= image.min() < 0.1 and 0.9 < image.max() <= 1


def test_a_fine_tuning_run_reads_the_training_patients_only(site, tmp_path, monkeypatch):
    from clinassist.training import cxr_init
    from clinassist.training.cxr_train import DEFAULT_CONFIG, load_trained, train

    seen = []
    original = SiteDataset.training_pixels

    def spy(self, records, size):
        seen.extend(records)
        return original(self, records, size)

    monkeypatch.setattr(SiteDataset, "training_pixels", spy)
    run = train(DEFAULT_CONFIG, tmp_path / "run", limit=32, epochs=1, init_from=BUNDLE,
                sites=[site])
    split = split_by_patient(read_site_dataset(site))
    net, cfg = load_trained(run)
    assert cfg["site_data"] == [split.summary()] and cfg["init_from"] == str(BUNDLE)
    assert patients(seen) == patients(split.train)  # every training patient, no held-out one
    start = cxr_init.rebuild_bundle(BUNDLE).members[0].state_dict()
    assert max(float((net.state_dict()[k] - start[k]).abs().max()) for k in start) > 0


def test_a_run_refuses_a_site_dataset_that_changed_since_it_was_recorded(site, tmp_path):
    from clinassist.training.site_data import training_part

    recorded = {**split_by_patient(read_site_dataset(site)).summary(), "manifest_sha256": "0" * 64}
    with pytest.raises(DataError, match="not the site dataset this run recorded"):
        training_part(recorded, 224, 16, 0.25, np.random.default_rng(0))
