import json
import shutil
from pathlib import Path

import numpy as np
import torch
from conftest import TINY_IMAGES
from safetensors.torch import load_file

from clinassist.training import cxr_data
from clinassist.training.cxr_train import (balanced_pos_weight, build_net, load_trained,
                                           prepare_data, train)
from clinassist.training.trainer import latest_checkpoint


def training_loss(net, data) -> float:
    """The objective the Trainer minimises (class-weighted BCE, batch statistics in the
    BatchNorm layers) on the run's own training images, without augmentation."""
    pixels = torch.from_numpy(data.train.pixels).float().unsqueeze(1)
    targets = torch.from_numpy(data.train.targets)
    net.pos_weight = balanced_pos_weight(data.train.targets)
    with torch.no_grad():
        return float(net.train()(pixels, targets)["loss"])


def last_weights(run: Path, cfg: dict):
    """The network as the run's last step left it (the run's final/ holds the epoch with the
    best validation loss, which on a few dozen images is often the first)."""
    net = build_net(cfg)
    net.load_state_dict(load_file(str(Path(latest_checkpoint(run)) / "model.safetensors")))
    return net


def test_a_short_run_lowers_the_loss(tiny_run):
    _, cfg = load_trained(tiny_run)
    data = prepare_data(cfg, limit=96)
    torch.manual_seed(cfg["seed"])
    untrained = build_net(cfg)
    assert training_loss(last_weights(tiny_run, cfg), data) < 0.6 * training_loss(untrained, data)


def test_a_run_resumed_from_a_checkpoint_ends_where_the_uninterrupted_run_ended(
        tiny_run, tmp_path):
    """Same seed, same steps, same weights: augmentation included (it draws from the
    generator the checkpoint saves)."""
    _, cfg = load_trained(tiny_run)
    interrupted = tmp_path / "interrupted"
    shutil.copytree(tiny_run, interrupted)
    last = Path(latest_checkpoint(interrupted))
    shutil.rmtree(last)
    shutil.rmtree(interrupted / "final")
    train(interrupted / "config.yaml", interrupted, resume=True, limit=TINY_IMAGES)
    resumed, uninterrupted = (last_weights(run, cfg).state_dict()
                              for run in (interrupted, tiny_run))
    assert Path(latest_checkpoint(interrupted)).name == last.name
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)


def test_resume_continues_from_the_checkpoint(tiny_run):
    sessions = json.loads((tiny_run / "sessions.json").read_text())
    steps_per_epoch = sessions[0]["final_step"]
    assert [s["resumed_from_step"] for s in sessions] == [0, steps_per_epoch]
    assert sessions[1]["final_step"] == 5 * steps_per_epoch


def test_the_run_saves_its_configuration(tiny_run):
    _, cfg = load_trained(tiny_run)
    assert cfg["epochs"] == 5 and cfg["image_size"] == 96


def test_class_imbalance_weight_balances_the_two_classes(tiny_run):
    _, cfg = load_trained(tiny_run)
    splits = cxr_data.make_splits(cxr_data.read_manifest(), cfg["val_fraction"], cfg["seed"])
    weight = balanced_pos_weight(cxr_data.labels(splits.train))
    assert 0.33 < weight < 0.36
    assert balanced_pos_weight(np.array([1, 1, 1, 0])) == 1 / 3
