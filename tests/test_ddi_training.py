"""A tiny real run: train on a few hundred S1 pairs, resume, export, and load the bundle."""

import json

import pytest
import yaml

from clinassist.bundle import Bundle
from clinassist.training.ddi_bundle import evaluate, export
from clinassist.training.ddi_train import DEFAULT_CONFIG, load_config, train

pytest.importorskip("rdkit")


def test_train_resume_export_and_evaluate(tmp_path):
    config = tmp_path / "ddi.yaml"  # a precision a model trained on 512 pairs can reach
    config.write_text(yaml.safe_dump({**load_config(DEFAULT_CONFIG), "threshold_precision": 0.3}))
    run = tmp_path / "run"
    train(config, run, limit=512, epochs=1, split="s1")
    train(config, run, resume=True, limit=512, epochs=2, split="s1")
    sessions = json.loads((run / "s1" / "sessions.json").read_text())
    assert [s["resumed_from_step"] > 0 for s in sessions] == [False, True]
    meta = export(run, tmp_path / "bundle", "0.0.1")
    assert meta["export_parity_max_abs_diff"] < 1e-4
    assert meta["training_config"]["epochs"] == 2
    result = evaluate(Bundle.load(tmp_path / "bundle"))
    assert result["splits"]["s1"]["pairs"] > 30_000
