"""Start `clinassist serve` as a real process on a free loopback port, with its own state."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from clinassist.processes import stop_group

ROLES = ("radiologist", "pharmacist", "ml_engineer", "admin", "gateway")
CLI = [sys.executable, "-m", "clinassist.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=home,
                          env={**os.environ, "CLINASSIST_HOME": str(home), **(env or {})})


@dataclass
class Service:
    home: Path
    url: str
    process: subprocess.Popen
    keys: dict[str, str] = field(default_factory=dict)

    def headers(self, role: str) -> dict:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def triage(self, instance: bytes) -> dict:
        """The JSON answer to one DICOM instance posted as a radiologist (asserts 200)."""
        response = httpx.post(self.url + "/v1/imaging/triage", content=instance, timeout=120,
                              headers={**self.headers("radiologist"),
                                       "Content-Type": "application/dicom"})
        assert response.status_code == 200, response.text
        return response.json()

    def stop(self) -> None:
        stop_group(self.process)


def start(home: Path, env: dict | None = None, timeout: float = 120,
          keys: dict[str, str] | None = None) -> Service:
    """Start the service in `home`; with `keys` (a restart), its users exist already."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(home / "service.log", "w")
    process = subprocess.Popen([*CLI, "serve", "--port", str(port)], cwd=home, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "CLINASSIST_HOME": str(home), **(env or {})})
    service = Service(home, f"http://127.0.0.1:{port}", process)
    service.keys = dict(keys or {})
    for role in ROLES if keys is None else ():
        added = cli(home, "users", "add", "--name", f"test-{role}", "--role", role)
        service.keys[role] = next(line for line in added.stdout.splitlines()
                                  if line.startswith("ca_"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited: {(home / 'service.log').read_text()[-2000:]}")
        try:
            if httpx.get(service.url + "/readyz", timeout=2).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    service.stop()
    raise RuntimeError(f"service not ready in {timeout} s: {(home / 'service.log').read_text()[-2000:]}")
