"""The training loop every model shares: `transformers.Trainer` with checkpoints, resume and a
saved config. Works unchanged under `accelerate launch` or `torchrun`."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import yaml
from torch import nn
from torch.utils.data import Dataset


def load_config(path: Path | str) -> dict:
    return yaml.safe_load(Path(path).read_text())


def run_config(config_path: Path | str, run: Path, resume: bool, epochs: float | None,
               overrides: dict | None = None) -> dict:
    """The run's configuration: the saved one when resuming, else the file with `overrides`;
    saved into the run."""
    run.mkdir(parents=True, exist_ok=True)
    saved = run / "config.yaml"
    resuming = resume and saved.exists()
    cfg = load_config(saved if resuming else config_path)
    if not resuming:
        cfg.update(overrides or {})
    if epochs is not None:
        cfg["epochs"] = epochs
    saved.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def collate(items: list[dict]) -> dict:
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def latest_checkpoint(run: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = run / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def record_session(run: Path, checkpoint: str | None, final_step: int) -> None:
    """Append this session to `sessions.json`, so a run's interruptions and resumes are visible."""
    log = run / "sessions.json"
    sessions = json.loads(log.read_text()) if log.is_file() else []
    start = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0
    sessions.append({"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "resumed_from_step": start, "final_step": final_step})
    log.write_text(json.dumps(sessions, indent=1))


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset, run: Path, cfg: dict,
        resume: bool, compute_metrics: Callable) -> nn.Module:
    """Train with evaluation and a checkpoint per epoch, keep the best by the config's
    `select_by` (a metric of `compute_metrics`, higher is better; default the validation loss),
    and write `run/final/model.safetensors`, `run/final/config.yaml` and `run/history.json`."""
    from safetensors.torch import save_file
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(cfg["seed"])
    select_by = cfg.get("select_by", "loss")
    args = TrainingArguments(
        output_dir=str(run / "checkpoints"), num_train_epochs=cfg["epochs"],
        per_device_train_batch_size=cfg["batch_size"],
        per_device_eval_batch_size=cfg.get("eval_batch_size", 64),
        learning_rate=cfg["learning_rate"], weight_decay=cfg["weight_decay"],
        warmup_steps=cfg["warmup_ratio"], lr_scheduler_type="cosine",
        eval_strategy="epoch", save_strategy="epoch", save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model=select_by,
        greater_is_better=select_by != "loss",
        logging_steps=20, seed=cfg["seed"], data_seed=cfg["seed"], report_to="none",
        dataloader_num_workers=0, remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                      data_collator=collate, compute_metrics=compute_metrics)
    checkpoint = latest_checkpoint(run) if resume else None
    trainer.train(resume_from_checkpoint=checkpoint)
    # Under accelerate or torchrun every process gets here holding the same weights: one writes
    # the run (else sessions.json records each session once per process), and the others wait
    # for it before they read final/ (the CLI calibrates next).
    if trainer.is_world_process_zero():
        record_session(run, checkpoint, trainer.state.global_step)
        final = run / "final"
        final.mkdir(exist_ok=True)
        save_file(trainer.model.state_dict(), str(final / "model.safetensors"))
        (final / "config.yaml").write_text((run / "config.yaml").read_text())
        (run / "history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    trainer.accelerator.wait_for_everyone()
    return trainer.model


def load_weights(net: nn.Module, run: Path) -> nn.Module:
    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(run / "final" / "model.safetensors")))
    return net.eval()
