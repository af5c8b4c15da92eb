"""Clean shutdown: SIGTERM or SIGINT to `clinassist gateway serve` itself (the parent only, as
a supervisor sends it) ends it within 10 s, with threads blocked on a destination and an
Orthanc that never answer, frees the port and leaves no process; of the C-STOREs under way,
each acknowledged instance has its job committed, the others are refused or unanswered."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from clinassist.serving.gateway.config import GatewayConfig
from clinassist.serving.gateway.gateway import open_queue
from clinassist.serving.gateway.inspection import StoreStatus
from test_gateway_support import echo, radiograph, send, wait_for, write_config

SUPERVISOR_GRACE_S = 10
INSTANCES, SIGNAL_AFTER = 30, 5  # the signal goes out once 5 instances are acknowledged


@pytest.fixture
def silent_peer():
    """A loopback port that accepts connections and never answers: a hung PACS or Orthanc."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens there, and a restarted gateway could listen (as servers do, with
    SO_REUSEADDR: the connections the stop closed linger in TIME_WAIT)."""
    with socket.socket() as client:
        if client.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("127.0.0.1", port))
            server.listen()
        except OSError:
            return False
    return True


def group_is_empty(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_parent_stops_the_gateway_in_time_and_loses_no_acknowledged_instance(
        tmp_path, silent_peer, signum):
    config = GatewayConfig.load(write_config(
        tmp_path, workers=2, destinations=[f"HUNG@127.0.0.1:{silent_peer}"],
        orthanc={"url": f"http://127.0.0.1:{silent_peer}", "poll_s": 0.2}))
    with open(tmp_path / "gateway.log", "w") as log:
        gateway = subprocess.Popen([sys.executable, "-m", "clinassist", "gateway", "serve"],
                                   cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True,
                                   env={**os.environ, "CLINASSIST_HOME": str(tmp_path)})
    try:
        wait_for(lambda: gateway.poll() is not None or echo(config.port) == StoreStatus.SUCCESS,
                 120, "the gateway to answer C-ECHO")
        instances = [radiograph(i) for i in range(INSTANCES)]
        signalled = threading.Event()

        def signal_mid_stream(index: int, status: int | None) -> None:
            if index == SIGNAL_AFTER:
                os.kill(gateway.pid, signum)  # the parent only, not its group
                signalled.set()

        # Once the gateway has aborted the association, the next C-STORE waits in vain.
        statuses = send(config.port, instances, after_each=signal_mid_stream, answer_timeout=5)
        assert signalled.is_set()
        assert gateway.wait(timeout=SUPERVISOR_GRACE_S) == 0
    finally:
        if gateway.poll() is None:
            os.killpg(gateway.pid, signal.SIGKILL)
    log_text = (tmp_path / "gateway.log").read_text()
    assert "stopped" in log_text and "Traceback" not in log_text, log_text[-2000:]
    assert port_is_free(config.port)
    assert group_is_empty(gateway.pid)
    acknowledged = {str(ds.SOPInstanceUID) for ds, status in zip(instances, statuses)
                    if status == StoreStatus.SUCCESS}
    queued = {job.sop_instance_uid for job in open_queue(tmp_path, config).jobs()}
    assert len(acknowledged) > SIGNAL_AFTER and acknowledged <= queued
    assert set(statuses) <= {StoreStatus.SUCCESS, StoreStatus.OUT_OF_RESOURCES, None}
    assert statuses[-1] != StoreStatus.SUCCESS  # the stream was cut by the stop
