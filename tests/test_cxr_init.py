"""Fine-tuning starts from the running model: a bundle's members rebuilt in PyTorch reproduce its
graph, and a run initialised from one starts from those weights."""

import json

import numpy as np
import pytest
import torch

from clinassist.bundle import Bundle
from clinassist.training import cxr_init
from clinassist.training.cxr_train import build_net, load_trained, train
from clinassist.training.cxr_train import DEFAULT_CONFIG

BUNDLE = cxr_init.Path("models/cxr_pneumonia")


def test_the_rebuilt_members_reproduce_the_bundles_logits():
    ensemble = cxr_init.rebuild_bundle(BUNDLE)
    image = np.linspace(0, 4000, 2 * 300 * 260, dtype=np.float32).reshape(2, 1, 300, 260)
    expected = Bundle.load("cxr_pneumonia").run(image=image)["logit"]
    with torch.no_grad():
        rebuilt = ensemble.logit_and_cam(torch.from_numpy(image))[0].numpy()
    assert np.max(np.abs(rebuilt - expected)) < 1e-3


def test_a_layout_that_does_not_reproduce_the_graph_is_refused(tmp_path):
    meta = json.loads((BUNDLE / "metadata.json").read_text())
    (tmp_path / "model.onnx").write_bytes((BUNDLE / meta["model_file"]).read_bytes())
    swapped = list(reversed(meta["training_configs"]))
    if swapped == meta["training_configs"]:
        swapped = [{**swapped[0], "image_size": swapped[0]["image_size"] // 2}] + swapped[1:]
    (tmp_path / "metadata.json").write_text(json.dumps({**meta, "training_configs": swapped}))
    with pytest.raises(cxr_init.InitError):
        cxr_init.rebuild_bundle(tmp_path)


def test_a_run_started_from_a_bundle_member_takes_its_weights_and_architecture(tmp_path):
    run = train(DEFAULT_CONFIG, tmp_path / "run", limit=64, epochs=1, init_from=BUNDLE,
                init_member=0)
    net, cfg = load_trained(run)
    source = cxr_init.source_config(BUNDLE, 0)
    assert {key: cfg[key] for key in source} == source and cfg["init_from"] == str(BUNDLE)
    start = cxr_init.rebuild_bundle(BUNDLE).members[0].state_dict()
    moved = max(float((net.state_dict()[k] - start[k]).abs().max()) for k in start)
    assert 0 < moved < 0.05  # it started there and took a few small steps


def test_a_folder_that_is_neither_a_run_nor_a_bundle_is_refused(tmp_path):
    with pytest.raises(cxr_init.InitError, match="neither a training run"):
        cxr_init.source_config(tmp_path)
