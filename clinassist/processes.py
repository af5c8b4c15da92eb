"""Child processes started in their own process group (services, Orthanc) and stopped with it."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process's group, then SIGKILL it if it is still running after `timeout`."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
