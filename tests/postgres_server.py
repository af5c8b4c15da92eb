"""A real PostgreSQL for the tests, from Debian's `postgresql` package: a throwaway cluster in
a temporary folder, on a free loopback port, run by an unprivileged user (the server refuses
to run as root, and the tests run as root here and in CI)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from service_process import free_port

SERVER_USER = "nobody"
START_TIMEOUT_S = 120
# A test cluster: nothing in it needs to survive a crash, so no fsync; room for the pools of
# the several processes the replica test starts.
SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": "300", "shared_buffers": "32MB"}


def binaries() -> Path:
    """Debian's PostgreSQL programs folder (`/usr/lib/postgresql/<major>/bin`)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda path: int(path.parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `apt-get install postgresql` "
                           "(make test installs the Makefile's SYSTEM_PACKAGES)")
    return found[-1].parent


@dataclass
class PostgresServer:
    folder: Path
    port: int
    process: subprocess.Popen

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"t{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # "fast" shutdown: clients are disconnected
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _as_server_user() -> dict:
    """subprocess options that run a program as SERVER_USER when we are root."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(SERVER_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def start() -> PostgresServer:
    """initdb a cluster (trust authentication, loopback only) and start `postgres` on it."""
    folder = Path(tempfile.mkdtemp(prefix="clinassist-pg-"))  # in /tmp, which nobody can enter
    as_user = _as_server_user()
    if as_user:
        os.chown(folder, as_user["user"], as_user["group"])
    data = folder / "data"
    bin_dir = binaries()
    subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
                   check=True, capture_output=True, cwd=folder, **as_user)
    port = free_port()
    options = [f"-c{name}={value}" for name, value in {
        **SETTINGS, "listen_addresses": "127.0.0.1", "port": str(port),
        "unix_socket_directories": str(folder)}.items()]
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(data), *options],
                               stdout=log, stderr=subprocess.STDOUT, cwd=folder, **as_user)
    server = PostgresServer(folder, port, process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            psycopg.connect(server.url(), connect_timeout=5).close()
            return server
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                log_text = (folder / "server.log").read_text()[-2000:]
                server.stop()
                raise RuntimeError(f"PostgreSQL did not start: {log_text}") from None
            time.sleep(0.2)
