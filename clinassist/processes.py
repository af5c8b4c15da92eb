"""Child processes: started in their own process group and stopped with it (tests, Orthanc), or
supervised (`clinassist serve`, `make run`) so that a stop signal reaches every descendant.

A supervisor is needed because neither the shell nor `subprocess.call` passes SIGTERM on, and
BentoML's workers leave their parent's process group (each starts a session of its own), so
signalling a group misses them. `supervise` forwards SIGTERM and SIGINT to each child, waits for
every process below it (recorded when the signal came) and kills what is still there at the
deadline.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_DEADLINE_S = 8.0  # then SIGKILL, inside the 10 s a supervisor (systemd, Kubernetes) allows
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36  # linux/prctl.h


def stop_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process's group, then SIGKILL it if it is still running after `timeout`."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass(frozen=True)
class Program:
    """One child of the supervisor. When a `required` one exits, the others are stopped."""

    name: str
    command: Sequence[str]
    env: dict[str, str] | None = None
    cwd: Path | None = None
    required: bool = True


def supervise(programs: Sequence[Program], deadline_s: float = STOP_DEADLINE_S) -> int:
    """Run `programs` until SIGTERM or SIGINT (forwarded to each) or until a required one exits;
    return once every descendant has exited: 0 when they all stopped by themselves in time,
    else the first required program's failing exit status (1 if some had to be killed)."""
    signals = _SignalPipe()
    # Orphans below (a worker whose server was killed) become our children, so waiting for
    # them also collects them, whichever process 1 this machine has.
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    children = {program.name: (program, _start(program)) for program in programs}
    status = 0
    while children:
        received = signals.next()
        if received in STOP_SIGNALS:
            return _stop(children, received, deadline_s) or status
        _collect_orphans({process.pid for _, process in children.values()})
        for name, (program, process) in list(children.items()):
            if process.poll() is None:
                continue
            del children[name]
            _say(f"{name} exited with status {process.returncode}")
            if program.required:
                status = process.returncode or 0
                return _stop(children, signal.SIGTERM, deadline_s) or status
    return status


class _SignalPipe:
    """SIGTERM, SIGINT and SIGCHLD as numbers read from a pipe, in the order they came.

    Python's handlers run in the main thread whichever thread the kernel picked (numpy's
    OpenBLAS starts threads of its own), and `set_wakeup_fd` writes each signal's number to the
    pipe, so none is lost between two reads."""

    def __init__(self) -> None:
        self._read, write = os.pipe()
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, *STOP_SIGNALS):
            signal.signal(signum, lambda *_: None)  # the number reaches the pipe; nothing else

    def next(self) -> int:
        return os.read(self._read, 1)[0]


def _start(program: Program) -> subprocess.Popen:
    """In a session of its own (a terminal's Ctrl+C reaches the supervisor, which forwards it),
    and told to stop if the supervisor dies without stopping it (SIGKILL, a crash)."""

    def in_child() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return subprocess.Popen(list(program.command), env=program.env, cwd=program.cwd,
                            start_new_session=True, preexec_fn=in_child)


def _stop(children: dict[str, tuple[Program, subprocess.Popen]], signum: int,
          deadline_s: float) -> int:
    """Send `signum` to each child, wait for them and all their descendants; 1 if any was
    still running at the deadline and had to be killed, else 0."""
    began = time.monotonic()
    below = _processes_below(process for _, process in children.values())
    for _, process in children.values():
        if process.poll() is None:
            process.send_signal(signum)
    _, alive = psutil.wait_procs(below, timeout=deadline_s)
    alive += [p for p in _processes_below(pr for _, pr in children.values()) if p not in below]
    for survivor in alive:  # still there, or started since (a worker respawned while stopping)
        _say(f"{_describe(survivor)} did not stop within {deadline_s:.0f} s; killing it")
        try:
            survivor.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=deadline_s)
    for _, process in children.values():
        process.wait()
    _say(f"stopped {', '.join(children) or 'nothing left'} on {signal.Signals(signum).name} "
         f"in {time.monotonic() - began:.1f} s")
    return 1 if alive else 0


def _collect_orphans(ours: set[int]) -> None:
    """Reap the exited processes that came to us as orphans (our own children Popen reaps)."""
    for child in psutil.Process().children():
        try:
            if child.pid not in ours and child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.NoSuchProcess, ChildProcessError):
            continue


def _prctl(option: int, value: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(option, value)


def _processes_below(processes) -> list[psutil.Process]:
    found = []
    for process in processes:
        try:
            top = psutil.Process(process.pid)
            found += [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return found


def _describe(process: psutil.Process) -> str:
    try:
        return f"process {process.pid} ({process.name()})"
    except psutil.NoSuchProcess:
        return f"process {process.pid}"


def _say(line: str) -> None:
    print(f"clinassist: {line}", file=sys.stderr, flush=True)
