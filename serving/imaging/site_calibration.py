"""Site calibration overlays: an imaging centre's own temperature and threshold for a model.

Stored in `CLINASSIST_HOME/site_calibration/<model>/` as numbered versions (`v1.json`, ...,
never rewritten) and an `active.json` naming the version in force; `remove` deactivates
without deleting, so every version stays on file for review. An overlay is bound to the exact
model file it was fitted for (name, version and SHA-256): for any other bundle it does not apply.
The committed bundle is never changed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from clinassist.serving.durable import fsync_folder, write_synced

log = logging.getLogger(__name__)
FOLDER = "site_calibration"
ACTIVE = "active.json"


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: str
    sha256: str

    @classmethod
    def of(cls, metadata: dict) -> "ModelIdentity":
        return cls(metadata["name"], metadata["version"], metadata["sha256"])


class SiteCalibrationStore:
    def __init__(self, home: Path, model_name: str) -> None:
        self.folder = home / FOLDER / model_name

    def versions(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(p.stem[1:]) for p in self.folder.glob("v*.json") if p.stem[1:].isdigit())

    def read(self, version: int) -> dict:
        return json.loads((self.folder / f"v{version}.json").read_text())

    def active_version(self) -> int | None:
        active = self.folder / ACTIVE
        return json.loads(active.read_text())["version"] if active.is_file() else None

    def active(self, model: ModelIdentity) -> dict | None:
        """The overlay in force for `model`, or None (none active, or fitted for another model)."""
        version = self.active_version()
        if version is None:
            return None
        overlay = self.read(version)
        if ModelIdentity(**overlay["model"]) != model:
            log.warning("site calibration v%d was fitted for %s %s, not for the loaded %s %s; "
                        "it is not applied (run clinassist calibrate site again)", version,
                        overlay["model"]["name"], overlay["model"]["version"], model.name,
                        model.version)
            return None
        return overlay

    def save(self, overlay: dict) -> int:
        """Write `overlay` as the next version and make it active; return its version."""
        version = max(self.versions(), default=0) + 1
        self.folder.mkdir(parents=True, exist_ok=True)
        write_synced(self.folder / f"v{version}.json",
                     json.dumps({**overlay, "version": version}, indent=2).encode())
        write_synced(self.folder / ACTIVE, json.dumps({"version": version}).encode())
        return version

    def remove(self) -> int | None:
        """Deactivate the active overlay (its file stays); return its version, or None."""
        version = self.active_version()
        if version is not None:
            (self.folder / ACTIVE).unlink()
            fsync_folder(self.folder)
        return version
