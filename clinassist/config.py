"""Where the project finds its data and keeps its state, read from the environment."""

from __future__ import annotations

import os
from pathlib import Path

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
