"""A tiny real run: train on a few thousand S1 items, resume, export, and serve the bundle."""

import json

import pytest
import yaml

from clinassist.bundle import Bundle
from clinassist.serving.medication.checks import Abstention, Prediction
from clinassist.serving.medication.kb import Ingredient
from clinassist.serving.medication.predictor import DrugBankPredictor
from clinassist.training.ddi_bundle import export
from clinassist.training.ddi_train import DEFAULT_CONFIG, load_config, train

pytest.importorskip("rdkit")


def test_train_resume_export_and_serve(tmp_path):
    config = tmp_path / "ddi.yaml"
    config.write_text(yaml.safe_dump({**load_config(DEFAULT_CONFIG), "batch_size": 512,
                                      "eval_batch_size": 2048}))
    run = tmp_path / "run"
    train(config, run, limit=2048, epochs=1, split="s1", seed=7)
    train(config, run, resume=True, limit=2048, epochs=2, split="s1")
    sessions = json.loads((run / "s1" / "sessions.json").read_text())
    assert [s["resumed_from_step"] > 0 for s in sessions] == [False, True]
    meta = export(run, tmp_path / "bundle", "0.0.1")
    assert meta["export_parity_max_abs_diff"] < 1e-4
    assert meta["training_config"]["epochs"] == 2
    assert meta["training_config"]["seed"] == 7  # set once, kept on resume
    assert meta["threshold"]["validation_false_alarm_upper95"] <= 0.05
    predictor = DrugBankPredictor(Bundle.load(tmp_path / "bundle"))
    answers = predictor.predict([(Ingredient(1, "warfarin", None),
                                  Ingredient(2, "ibuprofen", None))])
    assert isinstance(answers[0], (Prediction, Abstention))
