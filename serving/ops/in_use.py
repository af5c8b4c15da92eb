"""Which processes hold files open in a path: a running service keeps its databases open."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str  # the first words of its command line


def processes_using(path: Path) -> list[Holder]:
    """Other processes of this user with `path`, or a file below it, open (by pid)."""
    target = path.resolve()
    holders = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.pid == os.getpid():
            continue
        try:
            opened = [Path(file.path) for file in process.open_files()]
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if any(file == target or target in file.parents for file in opened):
            command = " ".join(process.info["cmdline"] or [])[:80]
            holders.append(Holder(process.pid, command))
    return sorted(holders, key=lambda holder: holder.pid)


def describe(holders: list[Holder]) -> str:
    """"pid 12 (clinassist serve), pid 40 (...)", or "" when there are none."""
    return ", ".join(f"pid {holder.pid} ({holder.command})" for holder in holders)
