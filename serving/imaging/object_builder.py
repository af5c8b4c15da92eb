"""The SR and Secondary Capture of an accepted result, built in a process of its own.

Building them is a hundred milliseconds of CPU, much of it Python (highdicom) holding the
GIL: on a thread of the API worker it stretched the answers being given meanwhile (the
monitoring record of a request, 2 ms alone, took 28). In this process it takes a core, not the
interpreter. It reads the instance from the result's folder, so only a path and the result
cross over. Spawned, it imports the API worker's main module again (BentoML's worker, ~150 MiB
with pydicom, highdicom and Pillow), but loads no model.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import resource_tracker
from pathlib import Path

from clinassist.serving.dicom import (Limits, TriageResult, build_secondary_capture, build_sr,
                                      radiograph_pixels, read_instance)
from clinassist.serving.dicom.quiet import keep_identifiers_out_of_logs, read_standard_tables
from clinassist.serving.imaging.allocator import IdleTrim, cap_arenas, keep_freed_memory
from clinassist.serving.imaging.results_store import dicom_bytes

QUIET = IdleTrim()
PARENT_POLL_S = 0.5


def builder() -> ProcessPoolExecutor:
    """One process building objects (spawned: the caller's threads are not forked)."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_started, initargs=(os.getpid(),))


class ObjectBuilder:
    """`build_objects` in the builder process: started on first use, and again when the one
    running died (killed, out of memory)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the process now (its imports take seconds) rather than at the first build."""
        self._running().submit(int)

    def stop(self) -> None:
        """End the process once the build in progress, if any, is done (a fraction of a
        second); builds not started are cancelled."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            _stop_resource_tracker()

    def build(self, source: Path, record: dict) -> dict[str, bytes]:
        pool = self._running()
        try:
            return pool.submit(build_objects, source, record).result()
        except BrokenProcessPool:
            return self._running(replacing=pool).submit(build_objects, source, record).result()

    def _running(self, replacing: ProcessPoolExecutor | None = None) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None or self._pool is replacing:
                self._pool = builder()
            return self._pool


def _stop_resource_tracker() -> None:
    """multiprocessing's resource tracker, started for the builder's queues, ends by itself
    only once this process has exited, too late to be reaped by it: where nothing reaps orphans
    (an init that does not), it stays behind as a zombie. Ended and reaped here instead; the
    next builder starts it again."""
    resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]


def _started(parent: int) -> None:
    """`parent` is named by the parent itself: one that died while this process was still
    starting would otherwise leave it taking init for its parent, and waiting on it forever."""
    threading.Thread(target=_exit_with, args=(parent,), name="exit-with-parent",
                     daemon=True).start()
    keep_identifiers_out_of_logs()
    cap_arenas()
    keep_freed_memory()
    read_standard_tables()


def _exit_with(parent: int) -> None:
    """Ends this process once the API worker that started it has (stopped or killed, it
    cannot stop its children itself)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


def build_objects(source: Path, record: dict) -> dict[str, bytes]:
    """Part 10 bytes of the SR and Secondary Capture of the result `record`
    (`TriageResult.as_record`) for the instance stored at `source`."""
    with QUIET.busy():
        result = TriageResult.from_record(record)
        instance = read_instance(source.read_bytes(), Limits.from_env())
        return {"sr": dicom_bytes(build_sr(instance, result)),
                "sc": dicom_bytes(build_secondary_capture(instance, radiograph_pixels(instance),
                                                          result))}
