"""Site calibration overlays: an imaging centre's own temperature and threshold for a model.

Kept in the site-calibration store (`CLINASSIST_HOME/site_calibration.db`, or the schema
`site_calibration` of PostgreSQL, so every replica decides with the same overlay): numbered
versions that are never rewritten, and a history of which version is in force (append-only,
triggers refuse UPDATE and DELETE); `remove` deactivates without deleting, so every version
stays on file for review. An overlay is bound to the exact model file it was fitted for (name,
version and SHA-256): for any other bundle it does not apply. The committed bundle is never
changed. A home from before this store kept the overlays as files in `site_calibration/`;
they are taken over when the store is first opened.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Column, Connection, Integer, MetaData, Table, Text, func, select

from clinassist.serving.storage import Store, StoreSchema

log = logging.getLogger(__name__)
SITE_CALIBRATION = StoreSchema("site_calibration", "site_calibration.db")
APPEND_ONLY = "site calibration is append-only"
LEGACY_FOLDER = "site_calibration"  # before the store: v<N>.json and active.json per model
_tables = MetaData()
overlay_table = Table("overlays", _tables, Column("model", Text, primary_key=True),
                      Column("version", Integer, primary_key=True), Column("saved", Text),
                      Column("overlay", Text))
activation_table = Table("activations", _tables, Column("id", Integer, primary_key=True),
                         Column("model", Text), Column("version", Integer),
                         Column("changed", Text))


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
        self.model = model_name
        self._db = Store(home, SITE_CALIBRATION)
        for table in (overlay_table, activation_table):
            self._db.keep_append_only(table.name, APPEND_ONLY)
        legacy = home / LEGACY_FOLDER / model_name
        if legacy.is_dir() and not self.versions():
            self._take_over(legacy)

    def versions(self) -> list[int]:
        c = overlay_table.c
        with self._db.read() as db:
            return list(db.execute(select(c.version).where(c.model == self.model)
                                   .order_by(c.version)).scalars())

    def read(self, version: int) -> dict:
        c = overlay_table.c
        with self._db.read() as db:
            text = db.execute(select(c.overlay).where(c.model == self.model,
                                                      c.version == version)).scalar()
        if text is None:
            raise KeyError(f"no site calibration v{version} of {self.model}")
        return json.loads(text)

    def active_version(self) -> int | None:
        with self._db.read() as db:
            return self._active_version(db)

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
        with self._db.write(serialised=True) as db:
            version = (self._newest_version(db) or 0) + 1
            self._insert(db, version, {**overlay, "version": version})
            self._activate(db, version)
        return version

    def remove(self) -> int | None:
        """Deactivate the active overlay (its version stays on file); return it, or None."""
        with self._db.write(serialised=True) as db:
            version = self._active_version(db)
            if version is not None:
                self._activate(db, None)
        return version

    def _active_version(self, db: Connection) -> int | None:
        c = activation_table.c
        return db.execute(select(c.version).where(c.model == self.model)
                          .order_by(c.id.desc()).limit(1)).scalar()

    def _newest_version(self, db: Connection) -> int | None:
        return db.execute(select(func.max(overlay_table.c.version))
                          .where(overlay_table.c.model == self.model)).scalar()

    def _insert(self, db: Connection, version: int, overlay: dict) -> None:
        db.execute(overlay_table.insert().values(model=self.model, version=version, saved=_now(),
                                                 overlay=json.dumps(overlay)))

    def _activate(self, db: Connection, version: int | None) -> None:
        db.execute(activation_table.insert().values(model=self.model, version=version,
                                                    changed=_now()))

    def _take_over(self, folder: Path) -> None:
        """Copy an earlier release's overlay files in, once (the files stay, unused)."""
        with self._db.write(serialised=True) as db:
            if self._newest_version(db) is not None:  # another process took them over
                return
            files = sorted((int(p.stem[1:]), p) for p in folder.glob("v*.json")
                           if p.stem[1:].isdigit())
            for version, path in files:
                self._insert(db, version, json.loads(path.read_text()))
            active = folder / "active.json"
            if files:
                self._activate(db, json.loads(active.read_text())["version"]
                               if active.is_file() else None)
        log.info("took over %d site calibration versions of %s from %s", len(files), self.model,
                 folder)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
