"""`clinassist train cxr` under `accelerate launch` with two CPU processes (gloo) on a tiny real
subset: one data-parallel run (the data sharded, one model in both processes, the run written
once), whose checkpoint then resumes in a single process. The installed `clinassist` script is
launched, as the README's "Distributed training" says (not `python -m` from the checkout)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from clinassist.training import cxr_train
from clinassist.training.trainer import load_weights
from service_process import free_port

BIN = Path(sys.executable).parent  # this environment's installed scripts
PROCESSES = 2
LIMIT = 32  # training images
BATCH = 8  # per process: 32 / (8 x 2) = 2 optimizer steps an epoch together, 4 alone
STEPS_TOGETHER, STEPS_ALONE = LIMIT // (BATCH * PROCESSES), LIMIT // BATCH
RUN_TIMEOUT_S = 600
LOSS_BOUND = 1e-6  # float32 sums in another order


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    cfg = cxr_train.default_config()
    cfg["batch_size"] = BATCH
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train(config: Path, run: Path, *launcher: str, epochs: int = 1, resume: bool = False):
    command = [*launcher, str(BIN / "clinassist"), "train", "cxr", "--config", str(config),
               "--output", str(run), "--limit", str(LIMIT), "--epochs", str(epochs)]
    done = subprocess.run(command + (["--resume"] if resume else []), capture_output=True,
                          text=True, cwd=run.parent, timeout=RUN_TIMEOUT_S,
                          env={**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def distributed_run(config, tmp_path_factory) -> Path:
    # `--cpu` would pick Accelerate's single-process launcher (several CPU processes only through
    # MPI); its torchrun launcher is the one named --multi_gpu, and without GPUs (and with
    # ACCELERATE_USE_CPU) the processes join a gloo process group.
    run = tmp_path_factory.mktemp("distributed") / "run"
    train(config, run, str(BIN / "accelerate"), "launch", "--multi_gpu",
          "--num_processes", str(PROCESSES), "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no", "--main_process_port", str(free_port()))
    return run


def sessions(run: Path) -> list[dict]:
    return json.loads((run / "sessions.json").read_text())


def test_two_gloo_processes_share_the_data_and_write_the_run_once(distributed_run):
    checkpoint = distributed_run / "checkpoints" / f"checkpoint-{STEPS_TOGETHER}"
    args = torch.load(checkpoint / "training_args.bin", weights_only=False)
    state = args.distributed_state
    assert (state.num_processes, state.backend, state.distributed_type.value) == (
        PROCESSES, "gloo", "MULTI_CPU")
    assert {p.name for p in checkpoint.glob("rng_state*.pth")} == {
        f"rng_state_{rank}.pth" for rank in range(PROCESSES)}  # each process's random state
    trainer_state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert trainer_state["global_step"] == STEPS_TOGETHER  # each step took a batch per process
    (session,) = sessions(distributed_run)  # recorded once, not once per process
    assert (session["resumed_from_step"], session["final_step"]) == (0, STEPS_TOGETHER)


def test_both_processes_held_the_model_the_run_wrote(distributed_run):
    """Validation ran sharded, each process scoring its half with its own replica; the loss they
    logged together is the loss of the written weights on the whole validation set only if both
    replicas were those weights."""
    checkpoint = distributed_run / "checkpoints" / f"checkpoint-{STEPS_TOGETHER}"
    final = load_file(str(distributed_run / "final" / "model.safetensors"))
    evaluated = load_file(str(checkpoint / "model.safetensors"))
    assert final.keys() == evaluated.keys()
    assert all(torch.equal(final[name], evaluated[name]) for name in final)

    (logged,) = [entry for entry in json.loads((distributed_run / "history.json").read_text())
                 if "eval_loss" in entry]
    cfg = yaml.safe_load((distributed_run / "config.yaml").read_text())
    data = cxr_train.prepare_data(cfg, LIMIT)  # the same subset, split and seed as the run
    net = load_weights(cxr_train.build_net(
        cfg, pos_weight=cxr_train.balanced_pos_weight(data.train.targets)), distributed_run)
    batch = [data.val[i] for i in range(len(data.val))]
    with torch.no_grad():
        loss = net(torch.stack([item["pixel_values"] for item in batch]),
                   labels=torch.stack([item["labels"] for item in batch]))["loss"]
    assert abs(float(loss) - logged["eval_loss"]) <= LOSS_BOUND * abs(logged["eval_loss"])


def test_the_checkpoint_resumes_in_a_single_process(distributed_run, config, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(distributed_run, run)
    train(config, run, epochs=2, resume=True)
    first, second = sessions(run)
    assert second["resumed_from_step"] == first["final_step"] == STEPS_TOGETHER
    # Trainer counts optimizer steps: the two processes' steps count as single-process ones, so
    # two epochs end at 2 x 4 steps (README: keep the number of processes when resuming).
    assert second["final_step"] == 2 * STEPS_ALONE
    assert (run / "checkpoints" / f"checkpoint-{2 * STEPS_ALONE}").is_dir()
    history = json.loads((run / "history.json").read_text())
    assert history[0]["step"] == STEPS_TOGETHER and "eval_loss" in history[0]  # carried over
