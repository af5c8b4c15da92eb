"""Give the C allocator's free memory back to the system once triage has gone quiet.

A triage allocates and frees tens of megabytes (the radiograph, its float copy, the picture).
glibc serves such blocks from its arenas after the first few (its mmap threshold rises to the
largest block freed) and keeps the freed pages, so a process's resident memory settles at the
high-water mark of its busiest moment: 629 MiB after a burst at concurrency 8 for 260 MiB in
use (tracemalloc: the live Python and NumPy objects flat). `malloc_trim(0)` returns them in
about 12 ms; it runs once no triage has run for QUIET_S, never between the requests of a
busy service (a fixed low mmap threshold kept the memory flat too, but cost each request
page faults: 174 -> 327 ms CPU per triage).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

QUIET_S = 1.0
ARENAS = 2  # glibc's default is 8 per core, each keeping its own freed radiographs
M_ARENA_MAX = -8  # glibc's malloc.h


def _libc_function(name: str) -> Any:
    """A glibc function, or None where the C library has none (musl, macOS)."""
    library = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(library), name, None) if library else None


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0), or None."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


def cap_arenas(arenas: int = ARENAS) -> bool:
    """Let the threads created from now on share `arenas` malloc arenas (mallopt
    M_ARENA_MAX; the environment's MALLOC_ARENA_MAX, read at start, says the same for the
    whole process). Whether glibc took it."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))


class IdleTrim:
    """`with trim.busy():` around each piece of work; QUIET_S after the last one ends, with
    none started since, the allocator's free pages go back to the system."""

    def __init__(self, quiet_s: float = QUIET_S,
                 trim: Callable[[], None] | None = _malloc_trim()) -> None:
        self.quiet_s, self._trim = quiet_s, trim
        self._lock = threading.Lock()
        self._busy = 0
        self._timer: threading.Timer | None = None
        self.trims = 0  # how many times the pages went back (for tests and benchmarks)

    @property
    def pending(self) -> bool:
        """A trim is due once the current quiet lasts QUIET_S."""
        with self._lock:
            return self._timer is not None

    @contextmanager
    def busy(self) -> Iterator[None]:
        with self._lock:
            self._busy += 1
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                if self._busy == 0 and self._trim is not None:
                    self._timer = threading.Timer(self.quiet_s, self._when_still_quiet)
                    self._timer.daemon = True
                    self._timer.start()

    def _when_still_quiet(self) -> None:
        with self._lock:
            if self._busy or self._timer is not threading.current_thread():
                return  # work started meanwhile: its end schedules the next timer
            self._timer = None
            self.trims += 1
        self._trim()  # outside the lock: glibc locks each arena itself
