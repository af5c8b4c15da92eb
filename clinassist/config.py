"""Where the project finds its data and keeps its state, read from the environment."""

from __future__ import annotations

import os
from pathlib import Path

from clinassist.errors import ClinassistError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "datasets"
MODELS_DIR = REPO_ROOT / "models"


def data_dir() -> Path:
    """The directory holding the datasets (`$CLINASSIST_DATA`, default `../shared/datasets`)."""
    return Path(os.environ.get("CLINASSIST_DATA", DEFAULT_DATA_DIR)).expanduser()


def home_dir() -> Path:
    """The state directory (`$CLINASSIST_HOME`, default `.clinassist` in the repository)."""
    return Path(os.environ.get("CLINASSIST_HOME", REPO_ROOT / ".clinassist")).expanduser()


def bundle_dir(name: str) -> Path:
    return MODELS_DIR / name


def api_workers() -> int:
    """Processes of the public API service (`$CLINASSIST_API_WORKERS`, default 1); the model
    service keeps one. Two on 2 cores served 1.9x the medication reviews, no more triage (README,
    "Benchmark")."""
    return _count_setting("CLINASSIST_API_WORKERS", 1)


def max_batch_size() -> int:
    """The model service's adaptive batching limit (`$CLINASSIST_MAX_BATCH_SIZE`, default 1:
    no batching, which on 2 cores gained nothing; README, "Benchmark")."""
    return _count_setting("CLINASSIST_MAX_BATCH_SIZE", 1)


def _count_setting(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ClinassistError(f"{name} must be a whole number of at least 1; got {text!r}")
    return int(text)
