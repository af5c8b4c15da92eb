"""Logging for `clinassist gateway serve`, with no patient data in any line.

Our own lines name jobs, AE titles and statuses, never a value of a data set. Library lines,
warnings and tracebacks can quote one (pydicom: "Invalid value for VR IS: '<the value>'";
pynetdicom: UIDs; highdicom: person names; an exception's message: whatever it was given), so
they keep their level, logger and place in the code but not their text, and a traceback keeps
its frames and exception type but not its message.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
import warnings
from types import TracebackType

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OURS = "clinassist"
WITHHELD = "message withheld: it may quote patient data"
# Chatty at INFO (pynetdicom logs each association, highdicom each object it builds); highdicom
# writes a malformed person name into its WARNING lines; pydicom logs each of its warnings a
# second time, and each failed decode with its traceback before it raises the error to the
# caller, which reports it.
LIBRARY_LEVELS = {"pynetdicom": logging.WARNING, "highdicom": logging.ERROR,
                  "pydicom": logging.CRITICAL}

log = logging.getLogger(__name__)


class WithholdLibraryMessages(logging.Filter):
    """Replace the text of every record not from our loggers by its place in the code. A
    library's traceback of a transport error (pynetdicom logs one whenever a connection closes
    mid-PDU: a peer that drops it, or the stop aborting an association) is dropped too: the
    line says where, and its frames are pynetdicom's socket reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != OURS and not record.name.startswith(OURS + "."):
            record.msg, record.args = f"({record.module}:{record.lineno}) {WITHHELD}", ()
            if record.exc_info and isinstance(record.exc_info[1], OSError):
                record.exc_info, record.exc_text = None, None
        return True


class FramesOnlyFormatter(logging.Formatter):
    """Tracebacks with their frames and exception type, without the exception's message."""

    def formatException(self, ei) -> str:  # noqa: N802 (logging's name)
        kind, _, frames = ei
        name = getattr(kind, "__qualname__", "exception")
        return ("Traceback (most recent call last):\n" + "".join(traceback.format_tb(frames))
                + f"{getattr(kind, '__module__', '')}.{name} ({WITHHELD})")


def configure() -> None:
    """INFO and up to stderr through the filter above; warnings and uncaught exceptions (any
    thread) go the same way instead of being printed whole."""
    handler = logging.StreamHandler()
    handler.setFormatter(FramesOnlyFormatter(FORMAT))
    handler.addFilter(WithholdLibraryMessages())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for name, level in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(level)
    warnings.filterwarnings("ignore", category=UserWarning, module="highdicom")  # name format
    warnings.showwarning = _show_warning
    sys.excepthook = _uncaught
    threading.excepthook = lambda hook: _uncaught(hook.exc_type, hook.exc_value,
                                                 hook.exc_traceback, hook.thread)


_warned: set[tuple[type[Warning], str, int]] = set()


def _show_warning(message, category: type[Warning], filename: str, lineno: int,
                  file=None, line=None) -> None:
    """Once per place in the code: without their text, repeats say nothing more."""
    if (category, filename, lineno) not in _warned:
        _warned.add((category, filename, lineno))
        log.warning("%s at %s:%d (%s; further ones from there are not logged)",
                    category.__name__, filename, lineno, WITHHELD)


def _uncaught(kind: type[BaseException], error: BaseException | None,
              frames: TracebackType | None, thread: threading.Thread | None = None) -> None:
    log.critical("uncaught %s in %s", kind.__name__, thread.name if thread else "the main thread",
                 exc_info=(kind, error, frames))
