"""Shared fixtures: the real manifest, and one short real training run reused by several tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `python -m pytest` from the checkout root puts the root on sys.path, where the `datasets/`
# folder of data cards would import as a namespace package and shadow Hugging Face `datasets`
# (which transformers probes for). The project itself is importable as the installed package.
CHECKOUT_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != CHECKOUT_ROOT]

TINY_IMAGES = 96


@pytest.fixture(autouse=True)
def close_database_files():
    """After each test, the pooled connections of the stores it opened are closed: left open,
    the suite's homes added up to thousands of open files in this one process."""
    yield
    from clinassist.serving.storage.engine import close_pooled_connections

    close_pooled_connections()


@pytest.fixture(scope="session")
def records():
    from clinassist.training import cxr_data

    return cxr_data.read_manifest()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A real run on a few dozen images: one epoch, then resumed to five."""
    from clinassist.training.cxr_train import DEFAULT_CONFIG, train

    run = tmp_path_factory.mktemp("tiny_run")
    train(DEFAULT_CONFIG, run, limit=TINY_IMAGES, epochs=1)
    train(DEFAULT_CONFIG, run, resume=True, limit=TINY_IMAGES, epochs=5)
    return run


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (Debian's package), started once for the session."""
    import postgres_server

    server = postgres_server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, monkeypatch):
    """Run the test with the stores in SQLite files (the default), then in a fresh PostgreSQL
    database (CLINASSIST_DATABASE_URL, inherited by the processes the test starts). Yields the
    URL, or None for SQLite."""
    from clinassist.serving.storage import DATABASE_URL_ENV, database_url
    from clinassist.serving.storage.engine import postgresql_engine

    if request.param == "sqlite":
        monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
        yield None
        return
    server = request.getfixturevalue("postgres")
    url = server.create_database()
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    yield url
    postgresql_engine(database_url()).dispose()  # this process's pooled connections to it
    server.drop_database(url)


SERVICE_MAX_DICOM_BYTES = 16 * 1024 * 1024


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    """`clinassist serve` started once, with its own CLINASSIST_HOME and one user per role."""
    from service_process import start

    running = start(tmp_path_factory.mktemp("service"),  # batching on: the suite runs that path
                    env={"CLINASSIST_MAX_DICOM_BYTES": str(SERVICE_MAX_DICOM_BYTES),
                         "CLINASSIST_MAX_BATCH_SIZE": "16"})
    yield running
    running.stop()
