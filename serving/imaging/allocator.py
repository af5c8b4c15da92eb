"""Keep the C allocator's freed memory while triage is busy; give it back once it goes quiet.

A triage allocates and frees tens of megabytes (the radiograph, its float copy, the picture).
Left to itself, glibc serves a block above its mmap threshold with fresh pages and returns
free heap above its trim threshold at once, so every request page-faults its temporaries in
again: on these machines 3,500-12,600 minor faults and 20-40 ms of system CPU per triage (a
fixed low mmap threshold made it 174 -> 327 ms CPU per triage). Kept (`keep_freed_memory`),
the freed pages serve the next request, and the process's resident memory would settle at the
high-water mark of its busiest moment (629 MiB after a burst at concurrency 8 for 260 MiB in
use), so `malloc_trim(0)` returns them in about 12 ms once no triage has run for QUIET_S,
never between the requests of a busy service.
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
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h
# The largest mmap threshold glibc takes on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): a radiograph
# of up to 8 million pixels as float32 comes from the heap; larger ones are mapped and unmapped.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 2**31 - 1  # never trimmed on free: IdleTrim trims


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


def _mallopt(option: int, value: int) -> bool:
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(option, value))


def cap_arenas(arenas: int = ARENAS) -> bool:
    """Let the threads created from now on share `arenas` malloc arenas (mallopt
    M_ARENA_MAX; the environment's MALLOC_ARENA_MAX, read at start, says the same for the
    whole process). Whether glibc took it."""
    return _mallopt(M_ARENA_MAX, arenas)


def keep_freed_memory() -> bool:
    """From now on, blocks up to MMAP_THRESHOLD come from the heap and freed heap stays with
    the process until `malloc_trim` (IdleTrim). Whether glibc took both."""
    return _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(M_TRIM_THRESHOLD,
                                                                    TRIM_THRESHOLD)


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
