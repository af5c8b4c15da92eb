"""The allocator's free pages go back to the system once triage pauses, never in between."""

from __future__ import annotations

import subprocess
import sys

import psutil

from clinassist.serving.imaging.allocator import IdleTrim, _malloc_trim
from test_gateway_support import wait_for

MIB = 1024 * 1024


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def test_trims_once_when_the_last_overlapping_work_ends():
    trim = Counting()
    idle = IdleTrim(quiet_s=0.05, trim=trim)
    with idle.busy():
        with idle.busy():
            pass
        assert not idle.pending  # the outer work still runs
    assert idle.pending
    wait_for(lambda: trim.calls == 1, 10, "the trim")
    assert not idle.pending and idle.trims == 1


def test_new_work_cancels_the_pending_trim():
    trim = Counting()
    idle = IdleTrim(quiet_s=60, trim=trim)  # would not fire within the test
    with idle.busy():
        pass
    assert idle.pending
    with idle.busy():
        assert not idle.pending
    assert idle.pending and trim.calls == 0
    idle.quiet_s = 0.05
    with idle.busy():
        pass
    wait_for(lambda: trim.calls == 1, 10, "the trim")


def test_without_malloc_trim_nothing_is_scheduled():
    idle = IdleTrim(trim=None)
    with idle.busy():
        pass
    assert not idle.pending


def test_glibc_gives_freed_heap_pages_back():
    trim = _malloc_trim()
    assert trim is not None  # the service runs on glibc (Debian)
    process = psutil.Process()
    # 256 MiB in 64 KiB blocks: below glibc's mmap threshold, so they come from the heap; the
    # last one stays alive above the others, so free() alone cannot shrink the heap.
    blocks = [bytearray(64 * 1024) for _ in range(4096)]
    keep = bytearray(64 * 1024)
    del blocks
    before = process.memory_info().rss
    trim()
    assert before - process.memory_info().rss > 128 * MIB
    del keep


def test_glibc_takes_the_arena_cap():
    """Set once the triage module is imported; glibc (this machine's C library) accepts it."""
    from clinassist.serving.imaging.allocator import cap_arenas

    assert cap_arenas()


FAULTS_AFTER = """
import resource, sys
import numpy as np
from clinassist.serving.imaging.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def triage_sized_temporaries():  # a 1955 x 1841 radiograph as float32, its RGB picture, a body
    alive = [np.ones(size, np.uint8) for size in (1955 * 1841 * 4, 1955 * 1841 * 3, 7_000_000)]
    del alive
triage_sized_temporaries()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    triage_sized_temporaries()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def minor_faults_per_round(mode: str) -> float:
    run = subprocess.run([sys.executable, "-c", FAULTS_AFTER, mode], capture_output=True,
                         text=True, check=True)
    return float(run.stdout)


def test_kept_memory_serves_the_next_request_without_page_faults():
    """Each round frees its 25 MB (6,200 pages) at once: glibc's defaults hand much of it back
    and fault it in again next round; kept, it is reused."""
    kept, default = minor_faults_per_round("keep"), minor_faults_per_round("default")
    assert kept < 400 < 1000 < default
