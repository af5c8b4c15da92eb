"""Where the stores keep their tables: one SQLite file per store in `CLINASSIST_HOME` (the
default), or one PostgreSQL database for every store when `CLINASSIST_DATABASE_URL` is set.

One engine per SQLite file and one per PostgreSQL URL, per process: the stores of a process
share its connection pool. A forked child drops the pools it inherited (a connection must never
cross a fork) and opens its own.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from clinassist.serving.storage.sqlite_file import (
    BUSY_TIMEOUT_S,
    DatabaseUnavailable,
)

DATABASE_URL_ENV = "CLINASSIST_DATABASE_URL"
POSTGRESQL_DRIVER = "postgresql+psycopg"
IMMEDIATE = "clinassist_immediate"  # execution option: a SQLite transaction that writes
POOL_SIZE = 5  # connections kept per engine; more open (and close) while threads need them

_engines: dict[str, Engine] = {}
_write_queues: dict[Path, "_WriteQueue"] = {}
WRITERS_SUFFIX = "-writers"  # the lock file beside a SQLite store, runtime only
_lock = threading.Lock()


def database_url() -> URL | None:
    """$CLINASSIST_DATABASE_URL as a PostgreSQL URL for psycopg 3, or None (SQLite files)."""
    text = os.environ.get(DATABASE_URL_ENV, "").strip()
    if not text:
        return None
    try:
        url = make_url(text)
    except ArgumentError:
        raise DatabaseUnavailable(
            f"{DATABASE_URL_ENV} is not a database URL: write it as "
            "postgresql://USER:PASSWORD@HOST:5432/DATABASE, or unset it for SQLite files") from None
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise DatabaseUnavailable(
            f"{DATABASE_URL_ENV} names a {url.get_backend_name()} database; only PostgreSQL is "
            "supported (postgresql://USER:PASSWORD@HOST:5432/DATABASE), or unset it for SQLite")
    return url.set(drivername=POSTGRESQL_DRIVER)


def describe(url: URL) -> str:
    """The URL without its password, for messages and logs."""
    return url.render_as_string(hide_password=True)


def sqlite_engine(path: Path) -> Engine:
    """The engine of one SQLite file: WAL, synchronous FULL, a 10 s busy timeout, and BEGIN
    IMMEDIATE for transactions that write (so read-then-write steps cannot race)."""
    return _cached(f"sqlite:{path}", lambda: _new_sqlite_engine(path))


@contextmanager
def queued_sqlite_writer(path: Path) -> Iterator[None]:
    """Held around a write transaction of the SQLite file at `path`: writers of one file queue
    on a lock and wake as soon as it is free, where SQLite's busy handler has each sleep and
    poll (up to 100 ms a turn: the p99 of audited requests at concurrency 8 was 580 ms). A
    process's threads queue on a thread lock, processes on an advisory lock (`flock`) of the
    file `path` + "-writers", tried every half millisecond; one that waits past the busy
    timeout goes on to SQLite, which names whoever holds the file."""
    with _lock:
        queue = _write_queues.get(path)
        if queue is None:
            queue = _write_queues[path] = _WriteQueue(path)
    with queue.held():
        yield


class _WriteQueue:
    def __init__(self, path: Path) -> None:
        self._thread_lock = threading.RLock()
        self._depth = 0  # nested holds by the thread holding it
        self._path = path.with_name(path.name + WRITERS_SUFFIX)
        self._file: int | None = None  # opened by the first writer, under the thread lock

    @contextmanager
    def held(self) -> Iterator[None]:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        if not self._thread_lock.acquire(timeout=BUSY_TIMEOUT_S):
            yield
            return
        try:
            self._depth += 1
            locked = self._depth > 1 or self._lock_file(deadline)
            try:
                yield
            finally:
                if locked and self._depth == 1 and self._file is not None:
                    fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._depth -= 1
            self._thread_lock.release()

    def close_if_idle(self) -> bool:
        """Close the lock file unless a writer holds the queue; whether it was closed."""
        if not self._thread_lock.acquire(blocking=False):
            return False
        try:
            if self._depth:
                return False
            if self._file is not None:
                os.close(self._file)
                self._file = None
            return True
        finally:
            self._thread_lock.release()

    def _lock_file(self, deadline: float) -> bool:
        if self._file is None:
            self._file = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.0005)


def postgresql_engine(url: URL) -> Engine:
    return _cached(describe(url), lambda: create_engine(
        url, pool_size=POOL_SIZE, max_overflow=-1, pool_pre_ping=True,
        connect_args={"connect_timeout": int(BUSY_TIMEOUT_S),
                      "application_name": "clinassist"}))


def _cached(key: str, make: Any) -> Engine:
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make()
        return engine


def _new_sqlite_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}", pool_size=POOL_SIZE, max_overflow=-1,
                           connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _configure(connection: sqlite3.Connection, _record: Any) -> None:
        connection.isolation_level = None  # transactions are begun below, not by sqlite3
        connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # damaged: fail now
        if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            connection.execute("PRAGMA journal_mode = WAL")  # readers never wait for a writer
        connection.execute("PRAGMA synchronous = FULL")  # a committed row survives power loss

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def close_pooled_connections() -> None:
    """Close the connections every engine keeps in its pool (each SQLite one holds the file,
    its WAL and its shared memory open), and the writers' lock files not held; they reopen
    when next needed. For a process done with
    the homes it opened: the test suite opens hundreds in one process, and past 1,024 open files
    pynetdicom's `select` cannot watch a new association's socket."""
    with _lock:
        engines = list(_engines.values())
        for path, queue in list(_write_queues.items()):
            if queue.close_if_idle():
                del _write_queues[path]
    for engine in engines:
        engine.dispose()


def _forget_in_child() -> None:
    """After a fork: drop (without closing) the parent's connections in every pool."""
    for engine in _engines.values():
        engine.dispose(close=False)
    _write_queues.clear()  # one held by a thread of the parent would never be released here


os.register_at_fork(after_in_child=_forget_in_child)
