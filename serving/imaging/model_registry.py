"""The model registry of the triage model: versioned bundles with stages, gates and rollback.

Bundles are stored in a BentoML model store (`CLINASSIST_MODEL_STORE`, default
`CLINASSIST_HOME/bentoml/models/`; one model `cxr_pneumonia:<version>` per bundle: `bentoml
models list` shows them, `bentoml models export` moves one to another site). BentoML has no
stages, so stages and gate results are an append-only ledger beside it, the model-registry
store (`CLINASSIST_HOME/model_registry.db`, or the schema `model_registry` of PostgreSQL):
every stage change and every gate is a new row (triggers refuse UPDATE and DELETE), so a
version's stage is its latest change and rollback returns to the production version before the
current one. Changes of the ledger are serialised across processes and machines.

The ledger is also what the services follow: a model service reads the ledger's latest
production change before every batch and loads the version it names from the model store, so a
promotion or rollback is served from the next request on, by every replica that shares the
ledger (PostgreSQL) and the model store (one folder they all mount), and after any restart.
While the registry is empty the committed bundle (`models/cxr_pneumonia`) is production; the
first change registers it, so a rollback can return to it even after the committed files are
replaced.

Writing imports BentoML; following production (the serving path) needs only the ledger.
"""


from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from sqlalchemy import Column, Connection, Integer, MetaData, Table, Text, func, select

from clinassist.bundle import Bundle, file_sha256, read_metadata
from clinassist.config import bundle_dir
from clinassist.errors import ClinassistError
from clinassist.serving.durable import write_synced
from clinassist.serving.storage import Store, StoreSchema, database_url

log = logging.getLogger(__name__)

MODEL = "cxr_pneumonia"
LEDGER_DB = "model_registry.db"
MODEL_STORE_ENV = "CLINASSIST_MODEL_STORE"
# BentoML's layout, BENTOML_HOME/models/<name>/<version>, with BENTOML_HOME in the home
DEFAULT_STORE = Path("bentoml", "models")

LEDGER = StoreSchema("model_registry", LEDGER_DB)
APPEND_ONLY = "the model registry is append-only"
_ledger = MetaData()
version_table = Table(
    "versions", _ledger,
    *(Column(name, Text, primary_key=True) for name in ("model", "version")),
    *(Column(name, Text) for name in ("sha256",
                                      "path",  # where it was stored (a record, not read)
                                      "registered", "registered_by", "source")))
gate_table = Table("gates", _ledger, Column("id", Integer, primary_key=True),
                   *(Column(name, Text) for name in ("model", "version", "sha256")),
                   Column("passed", Integer), Column("recorded", Text), Column("report", Text))
change_table = Table("stage_changes", _ledger, Column("id", Integer, primary_key=True),
                     *(Column(name, Text) for name in (
                         "model", "version", "stage", "kind",  # kind: see Kind
                         "changed", "actor", "reason")),
                     Column("gate_id", Integer), Column("override", Integer))


class Stage(StrEnum):
    CANDIDATE = "candidate"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class Kind(StrEnum):
    """Why a stage changed."""

    REGISTERED = "registered"
    INITIAL = "initial"  # the committed bundle, production of an empty registry
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled back"  # production again: the one it replaced was rolled back
    REPLACED = "replaced"  # archived when another became production


class RegistryError(ClinassistError):
    """A registry change that is not allowed or not possible (the message says why, and what
    to do)."""


@dataclass(frozen=True)
class Gate:
    id: int
    passed: bool
    sha256: str
    recorded: str
    reasons: list[str]


@dataclass(frozen=True)
class RegisteredVersion:
    version: str
    sha256: str
    path: Path  # absolute
    registered: str
    source: str
    stage: Stage
    stage_changed: str
    gate: Gate | None  # the latest gate of this model file

    def as_json(self) -> dict:
        return {"version": self.version, "stage": self.stage.value, "sha256": self.sha256,
                "registered": self.registered, "source": self.source,
                "stage_changed": self.stage_changed,
                "gate": None if self.gate is None else {
                    "passed": self.gate.passed, "recorded": self.gate.recorded,
                    "reasons": self.gate.reasons}}


@dataclass(frozen=True)
class Change:
    """A production change: what is served now and what was before."""

    production: RegisteredVersion
    previous: RegisteredVersion | None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def model_store(home: Path) -> Path:
    """$CLINASSIST_MODEL_STORE, else the home's `bentoml/models`."""
    configured = os.environ.get(MODEL_STORE_ENV, "").strip()
    return Path(configured).expanduser() if configured else home / DEFAULT_STORE


def stored_bundle(home: Path, version: str, model: str = MODEL) -> Path:
    """The folder of a registered version in the model store."""
    return model_store(home) / model / version


@dataclass(frozen=True)
class ProductionChange:
    """The ledger's latest production change: which version, and the row that made it so."""

    id: int
    version: str


def existing_registry(home: Path, model: str = MODEL) -> "ModelRegistry | None":
    """The registry, or None where it has never been written to (a home without a ledger file
    is not given one)."""
    if database_url() is None and not (home / LEDGER_DB).exists():
        return None
    return ModelRegistry(home, model)


def production_dir(home: Path, model: str = MODEL,
                   change: ProductionChange | None = None) -> Path:
    """The folder of the production bundle (named by `change`, else by the ledger's latest):
    the registry's, else the committed one."""
    if change is None and (registry := existing_registry(home, model)) is not None:
        change = registry.production_change()
    return bundle_dir(model) if change is None else stored_bundle(home, change.version, model)


def version_metadata(home: Path, version: str, model: str = MODEL) -> dict:
    """The metadata of `version`: a registered one, or the committed bundle's own version."""
    registered = stored_bundle(home, version, model) / "metadata.json"
    if registered.is_file():
        return json.loads(registered.read_text())
    committed = read_metadata(bundle_dir(model))[1]
    if committed["version"] == version:
        return committed
    raise RegistryError(f"{model} {version} is neither registered in {model_store(home)} nor "
                        "the committed bundle; `clinassist models list` shows the versions")


class ModelRegistry:
    def __init__(self, home: Path, model: str = MODEL) -> None:
        self.home, self.model = home, model
        self._db = Store(home, LEDGER)
        for table in (version_table, gate_table, change_table):
            self._db.keep_append_only(table.name, APPEND_ONLY)

    # reading

    def versions(self) -> list[RegisteredVersion]:
        latest = (select(func.max(change_table.c.id))
                  .where(change_table.c.model == version_table.c.model,
                         change_table.c.version == version_table.c.version)
                  .correlate(version_table).scalar_subquery())
        with self._db.read() as db:
            rows = db.execute(
                select(version_table, change_table.c.stage, change_table.c.changed)
                .join(change_table, change_table.c.id == latest)
                .where(version_table.c.model == self.model)
                .order_by(version_table.c.registered)).all()
            return [RegisteredVersion(row.version, row.sha256,
                                      stored_bundle(self.home, row.version, self.model),
                                      row.registered, row.source, Stage(row.stage), row.changed,
                                      self._latest_gate(db, row.version, row.sha256))
                    for row in rows]

    def get(self, version: str) -> RegisteredVersion:
        for registered in self.versions():
            if registered.version == version:
                return registered
        known = ", ".join(v.version for v in self.versions()) or "none"
        raise RegistryError(f"{self.model} {version} is not registered (registered: {known}); "
                            "register a bundle with `clinassist gate cxr` or `models register`")

    def production(self) -> RegisteredVersion | None:
        return next((v for v in self.versions() if v.stage == Stage.PRODUCTION), None)

    def production_change(self, db: Connection | None = None) -> ProductionChange | None:
        """The latest change to production (one row: read before every batch)."""
        if db is None:
            with self._db.read() as reader:
                return self.production_change(reader)
        c = change_table.c
        row = db.execute(select(c.id, c.version)
                         .where(c.model == self.model, c.stage == Stage.PRODUCTION.value)
                         .order_by(c.id.desc()).limit(1)).first()
        return None if row is None else ProductionChange(row.id, row.version)

    def history(self) -> list[dict]:
        """Every stage change, oldest first."""
        c = change_table.c
        with self._db.read() as db:
            return [dict(row._mapping) for row in db.execute(
                select(c.version, c.stage, c.kind, c.changed, c.actor, c.reason, c.gate_id,
                       c.override).where(c.model == self.model).order_by(c.id))]

    def _last_change(self, db: Connection | None = None) -> int | None:
        """The id of this model's newest stage change (None: none yet)."""
        query = select(func.max(change_table.c.id)).where(change_table.c.model == self.model)
        if db is not None:
            return db.execute(query).scalar()
        with self._db.read() as reader:
            return reader.execute(query).scalar()

    def _latest_gate(self, db: Connection, version: str, sha256: str) -> Gate | None:
        c = gate_table.c
        row = db.execute(select(gate_table).where(
            c.model == self.model, c.version == version, c.sha256 == sha256)
            .order_by(c.id.desc()).limit(1)).first()
        if row is None:
            return None
        return Gate(row.id, bool(row.passed), row.sha256, row.recorded,
                    json.loads(row.report).get("reasons", []))

    # changing

    def ensure_initial(self, actor: str) -> None:
        """With an empty registry, register the committed bundle as production (once, whichever
        of several processes gets there first)."""
        if self._last_change() is not None:
            return
        registered = self._register(bundle_dir(self.model), actor, "committed bundle")
        with self._db.write(serialised=True) as db:
            if self.production_change(db) is None:
                self._insert(db, registered.version, Stage.PRODUCTION, Kind.INITIAL, actor,
                             "production of an empty registry: the committed bundle")

    def register(self, folder: Path, actor: str) -> RegisteredVersion:
        """Copy the bundle in `folder` into the model store as a candidate (the same version
        and model file again is a no-op; the same version with another file is refused). The
        first registration registers the committed bundle first, as production."""
        self.ensure_initial(actor)
        return self._register(folder, actor, str(Path(folder).resolve()))

    def _register(self, folder: Path, actor: str, source: str) -> RegisteredVersion:
        bundle = Bundle.load(folder)  # checks the file against its sha256 and the I/O contract
        if bundle.name != self.model:
            raise RegistryError(f"{folder} holds {bundle.name}, not {self.model}")
        if self._registered_sha256(bundle) is None:
            path = self._store(bundle)
            with self._db.write(serialised=True) as db:  # another process may have been first
                if self._registered_sha256(bundle, db) is None:
                    db.execute(version_table.insert().values(
                        model=self.model, version=bundle.version,
                        sha256=bundle.metadata["sha256"], path=str(path), registered=now(),
                        registered_by=actor, source=source))
                    self._insert(db, bundle.version, Stage.CANDIDATE, Kind.REGISTERED, actor,
                                 f"registered from {source}")
        return self.get(bundle.version)

    def _registered_sha256(self, bundle: Bundle, db: Connection | None = None) -> str | None:
        """The model file registered as `bundle`'s version (None: not registered); refused if
        it is another file than the bundle's."""
        if db is None:
            with self._db.read() as reader:
                return self._registered_sha256(bundle, reader)
        c = version_table.c
        registered = db.execute(select(c.sha256).where(c.model == self.model,
                                                       c.version == bundle.version)).scalar()
        if registered is not None and registered != bundle.metadata["sha256"]:
            raise RegistryError(f"{self.model} {bundle.version} is already registered with "
                                "another model file; export the candidate with another "
                                "--version")
        return registered

    def record_gate(self, version: str, report: dict) -> Gate:
        registered = self.get(version)
        if report["candidate"]["sha256"] != registered.sha256:
            raise RegistryError(f"the gate report is of another model file than {self.model} "
                                f"{version}; run the gate on the registered bundle")
        with self._db.write() as db:
            db.execute(gate_table.insert().values(
                model=self.model, version=version, sha256=registered.sha256,
                passed=int(bool(report["passed"])), recorded=now(), report=json.dumps(report)))
            gate = self._latest_gate(db, version, registered.sha256)
        assert gate is not None
        return gate

    def promote(self, version: str, actor: str, reason: str, override: bool = False) -> Change:
        """Make `version` production (the current one is archived). Refused unless its latest
        gate passed, or `override` (the caller has checked the admin's authority)."""
        self.ensure_initial(actor)
        seen = self._last_change()
        target, current = self.get(version), self.production()
        if current is not None and current.version == version:
            raise RegistryError(f"{self.model} {version} is already production")
        if not override and (target.gate is None or not target.gate.passed):
            why = ("it has not been through the gate" if target.gate is None else
                   "its gate failed: " + "; ".join(target.gate.reasons))
            raise RegistryError(f"{self.model} {version} may not be promoted: {why}. Run "
                                "`clinassist gate cxr --candidate ...`, or an admin may "
                                "promote it with --override")
        return self._replace(target, current, seen, actor, reason, Kind.PROMOTED, override)

    def rollback(self, actor: str, reason: str) -> Change:
        """Return to the version the current production replaced (again and again: each
        rollback steps one promotion further back)."""
        self.ensure_initial(actor)
        seen = self._last_change()
        current = self.production()
        stack: list[str] = []  # production versions, each promotion on top of the one it replaced
        for row in self.history():
            if row["kind"] in (Kind.INITIAL, Kind.PROMOTED):
                stack.append(row["version"])
            elif row["kind"] == Kind.ROLLED_BACK:
                stack.pop()
        if current is None or len(stack) < 2:
            raise RegistryError(f"no earlier production version of {self.model} to roll back "
                                "to; `clinassist models list` shows the versions")
        return self._replace(self.get(stack[-2]), current, seen, actor, reason,
                             Kind.ROLLED_BACK)

    def _replace(self, target: RegisteredVersion, current: RegisteredVersion | None,
                 seen: int | None, actor: str, reason: str, kind: Kind,
                 override: bool = False) -> Change:
        """`target` production in place of `current`, both read when the ledger's last change
        was `seen`; refused if another promotion or rollback came in since (two admins at once
        must not both pass their checks)."""
        Bundle.load(target.path)  # never point the services at a bundle that does not load
        with self._db.write(serialised=True) as db:
            if self._last_change(db) != seen:
                raise RegistryError(
                    f"the {self.model} registry changed while this ran (another promotion or "
                    "rollback); nothing was changed: see `clinassist models list`, then run "
                    "it again if it is still wanted")
            if current is not None:
                self._insert(db, current.version, Stage.ARCHIVED, Kind.REPLACED, actor,
                             f"replaced by {target.version}")
            self._insert(db, target.version, Stage.PRODUCTION, kind, actor, reason,
                         target.gate.id if target.gate else None, override)
        production = self.production()
        assert production is not None
        return Change(production, current)

    def _insert(self, db: Connection, version: str, stage: Stage, kind: Kind, actor: str,
                reason: str, gate_id: int | None = None, override: bool = False) -> None:
        db.execute(change_table.insert().values(
            model=self.model, version=version, stage=stage.value, kind=kind.value,
            changed=now(), actor=actor, reason=reason, gate_id=gate_id, override=int(override)))

    def _store(self, bundle: Bundle) -> Path:
        """Copy the bundle into the model store (its own store object, whatever BENTOML_HOME
        this process was started with)."""
        import bentoml
        from bentoml._internal.models.model import ModelStore
        from bentoml.exceptions import BentoMLException

        store = ModelStore(str(model_store(self.home)))
        tag = f"{self.model}:{bundle.version}"
        if not _stored(tag, store):  # (stored already if a crash came before its ledger row)
            try:
                with bentoml.models.create(tag, module="clinassist.bundle",
                                           labels={"task": "triage"},
                                           metadata={"sha256": bundle.metadata["sha256"]},
                                           _model_store=store) as model:
                    shutil.copytree(bundle.path, model.path, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns(".*"))
            except BentoMLException as failed:
                if not _stored(tag, store):  # else another process stored it meanwhile
                    raise failed
        existing = bentoml.models.get(tag, _model_store=store)
        path = Path(existing.path)
        if file_sha256(path / bundle.metadata["model_file"]) != bundle.metadata["sha256"]:
            raise RegistryError(f"the model store already holds another {tag} ({path}); "
                                "export the candidate with another --version")
        return path


def _stored(tag: str, store) -> bool:
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        bentoml.models.get(tag, _model_store=store)
    except NotFound:
        return False
    return True


class ProductionFollower:
    """The production bundle for a model service: reloaded when the ledger's latest production
    change is another than the one loaded (checked at every `current()`, one indexed row).

    A bundle that fails to load is logged and skipped (the running one keeps serving) until
    production changes again."""

    def __init__(self, home: Path, threads: int | None = None, model: str = MODEL) -> None:
        self.home, self.model, self.threads = home, model, threads
        self._registry = existing_registry(home, model)
        self._seen = self._latest()
        self._lock = threading.Lock()
        self.bundle = Bundle.load(production_dir(home, model, self._seen), threads)

    def _latest(self) -> ProductionChange | None:
        if self._registry is None:
            self._registry = existing_registry(self.home, self.model)
            if self._registry is None:
                return None
        return self._registry.production_change()

    def current(self) -> Bundle:
        latest = self._latest()
        if latest == self._seen:
            return self.bundle
        with self._lock:  # one reload, whichever thread of the model service sees it first
            if latest != self._seen:
                self._seen = latest
                self._reload(latest)
        return self.bundle

    def _reload(self, change: ProductionChange | None) -> None:
        try:
            self.bundle = Bundle.load(production_dir(self.home, self.model, change), self.threads)
            log.info("now serving %s %s", self.model, self.bundle.version)
        except Exception as error:  # whatever is wrong with it, the running bundle serves on
            log.error("the registry names a production bundle that does not load (%s); still "
                      "serving %s %s", error, self.model, self.bundle.version)
