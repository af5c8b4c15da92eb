"""What the benchmarks read of the processes they start: resident memory (at idle, at its peak
under load, at idle again) and CPU time, per process, named by what it runs.

Not a benchmark itself; `imaging_service.py`, `gateway.py` and `medication.py` import it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import psutil

MIB = 1024 * 1024
SAMPLE_S = 0.2


def named_processes(root_pid: int) -> dict[str, psutil.Process]:
    """`clinassist serve` (or any process) and every process below it, named by what it runs."""
    named: dict[str, psutil.Process] = {}
    root = psutil.Process(root_pid)
    for process in [root, *root.children(recursive=True)]:
        command = process.cmdline()
        if "--service-name" in command:
            name = f"worker {command[command.index('--service-name') + 1]}"
        elif any(part.endswith("Orthanc") for part in command):
            name = "orthanc"  # before the gateway: its scratch folder may say gateway
        elif "serve" in command and any("bentoml" in part for part in command):
            name = "bentoml arbiter"
        elif any("resource_tracker" in part for part in command):
            name = "multiprocessing resource tracker"
        elif any("multiprocessing" in part for part in command):
            name = "object builder"  # an API worker's process building SRs and SCs
        elif "clinassist.serving.gateway" in command or "gateway" in command:
            name = "gateway"  # python -m clinassist.serving.gateway serve, clinassist gateway
        else:
            name = "clinassist serve"
        named[name if name not in named else f"{name} {process.pid}"] = process
    return named


def rss_mib(processes: dict[str, psutil.Process]) -> dict[str, float]:
    """Resident memory per process (0 for one that is gone)."""
    sizes = {}
    for name, process in processes.items():
        try:
            sizes[name] = process.memory_info().rss / MIB
        except psutil.NoSuchProcess:
            sizes[name] = 0.0
    return sizes


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    """User plus system CPU time per process so far, all its threads."""
    seconds = {}
    for name, process in processes.items():
        try:
            times = process.cpu_times()
            seconds[name] = times.user + times.system
        except psutil.NoSuchProcess:
            seconds[name] = 0.0
    return seconds


class PeakMemory:
    """Samples resident memory every SAMPLE_S in a thread while the block runs; `peak` holds
    the largest value seen per process."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes
        self.peak = rss_mib(processes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            for name, size in rss_mib(self.processes).items():
                self.peak[name] = max(self.peak[name], size)


@dataclass(frozen=True)
class Memory:
    """One process's resident memory around a burst of work (MiB)."""

    idle_before: float
    peak: float
    idle_after: float

    @property
    def growth(self) -> float:
        """Idle after the burst against idle before it: what the burst left behind."""
        return self.idle_after / self.idle_before - 1 if self.idle_before else 0.0

    @property
    def peak_growth(self) -> float:
        return self.peak / self.idle_before - 1 if self.idle_before else 0.0


def settle_rss(processes: dict[str, psutil.Process], seconds: float = 3.0) -> dict[str, float]:
    """Resident memory once the processes are idle: the median of samples over `seconds`."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(rss_mib(processes))
        time.sleep(SAMPLE_S)
    return {name: sorted(sample[name] for sample in samples)[len(samples) // 2]
            for name in samples[0]}


def memory_table(before: dict[str, float], peak: dict[str, float],
                 after: dict[str, float]) -> dict[str, Memory]:
    return {name: Memory(before[name], peak[name], after[name]) for name in before}


def print_memory(title: str, memory: dict[str, Memory], limit: float = 0.20) -> None:
    print(f"{title} (MiB: idle before, peak, idle after; growth after the burst, goal <= "
          f"{limit:.0%}):")
    for name, m in memory.items():
        verdict = "ok" if m.growth <= limit else "OVER"
        print(f"  {name:28s} {m.idle_before:7.1f} {m.peak:7.1f} {m.idle_after:7.1f}  "
              f"{m.growth:+6.1%} {verdict} (peak {m.peak_growth:+.0%})")


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"
