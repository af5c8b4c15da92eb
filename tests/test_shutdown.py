"""A stop signal sent to the parent only, as a supervisor sends it, stops every process below it
within 10 s and frees the ports: `clinassist serve` (SIGTERM, SIGINT) and `make run` with a
configured gateway (SIGTERM to make; SIGINT to make's process group, as a terminal's Ctrl+C,
since make leaves SIGINT to the group). A request in flight at SIGTERM finishes or gets 503."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from dicom_fixtures import real_cr
from service_process import free_port, start

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_BUDGET_S = 10.0
TRIAGE = "/v1/imaging/triage"


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now, found by walking /proc (each process names its parent)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # exited while we looked
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    """Still a process (a zombie has exited: it only waits for its parent to collect it)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def port_is_free(port: int) -> bool:
    """A new server could listen there (SO_REUSEADDR, as servers do, past TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(condition, timeout: float, what: str) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            pytest.fail(f"{what} not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - began


def stop_and_check(parent: subprocess.Popen, signum: int, ports: list[int],
                   to_group: bool = False) -> float:
    """Signal the parent (or its process group), then wait for every process recorded below it
    and for its ports; the seconds the stop took."""
    below = descendants(parent.pid)
    assert len(below) >= 3, below  # at least BentoML's server and its two workers
    if to_group:
        os.killpg(parent.pid, signum)
    else:
        parent.send_signal(signum)
    took = wait_until(lambda: parent.poll() is not None and not any(map(running, below)),
                      STOP_BUDGET_S, f"every process below {parent.pid} stopped")
    assert [port for port in ports if not port_is_free(port)] == []
    return took


def in_progress(url: str) -> float:
    metrics = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("bentoml_service_request_in_progress{")
               and f'endpoint="{TRIAGE}"' in line)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_to_serve_stops_every_process_and_frees_the_port(tmp_path, signum):
    service = start(tmp_path)
    port = int(service.url.rsplit(":", 1)[1])
    answers: list[object] = []

    def triage() -> None:
        try:
            answers.append(httpx.post(service.url + TRIAGE, content=real_cr(), timeout=60, headers={
                **service.headers("radiologist"), "Content-Type": "application/dicom"}))
        except httpx.HTTPError as error:
            answers.append(error)

    sender = threading.Thread(target=triage)
    sender.start()
    wait_until(lambda: in_progress(service.url) >= 1, 60, "a triage request in progress")
    took = stop_and_check(service.process, signum, [port])
    sender.join()
    (answer,) = answers
    assert isinstance(answer, httpx.Response) and answer.status_code in (200, 503), answer
    print(f"{signal.Signals(signum).name}: stopped in {took:.1f} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_make_run_stops_the_services_and_the_gateway(tmp_path, signum):
    http_port, dicom_port = free_port(), free_port()
    (tmp_path / "gateway.json").write_text(json.dumps({
        "allowed_calling_ae_titles": ["TESTSCU"], "host": "127.0.0.1", "port": dicom_port}))
    log = open(tmp_path / "make-run.log", "w")
    # -o: use the .venv as it is (a newer pyproject.toml would otherwise reinstall it)
    make = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/.installed", "run",
                             f"PORT={http_port}"], cwd=REPO_ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "CLINASSIST_HOME": str(tmp_path)})
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{http_port}/readyz"), 180, "/readyz")
        wait_until(lambda: not port_is_free(dicom_port), 120, "the gateway listening")
        took = stop_and_check(make, signum, [http_port, dicom_port],
                              to_group=signum == signal.SIGINT)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
    print(f"make run, {signal.Signals(signum).name}: stopped in {took:.1f} s")
    assert "gateway exited" not in (tmp_path / "make-run.log").read_text()  # it ran until told


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
