"""The `gateway serve` logging keeps patient data out of every line: library messages,
warnings, logged tracebacks and uncaught exceptions in any thread keep their place in the
code and their type, not their text."""

from __future__ import annotations

import subprocess
import sys
import textwrap

NAME = "Secretname^Patient"


def stderr_of(program: str) -> str:
    """What a process that configured the gateway's logging and ran `program` wrote."""
    script = "from clinassist.serving.gateway import logs\nlogs.configure()\n" + textwrap.dedent(
        program)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    return run.stderr


def test_our_lines_are_kept_and_library_lines_lose_their_text():
    err = stderr_of(f"""
        import logging
        logging.getLogger("clinassist.serving.gateway.scp").warning("job %s received", "j1")
        logging.getLogger("pynetdicom.events").warning("Invalid value {NAME!r}")
    """)
    assert "clinassist.serving.gateway.scp: job j1 received" in err
    assert "pynetdicom.events: (<string>:" in err and "message withheld" in err
    assert "Secretname" not in err


def test_warnings_are_logged_once_per_place_without_their_text():
    err = stderr_of(f"""
        import warnings
        for _ in range(3):
            warnings.warn("Invalid value for VR IS: {NAME!r}")
    """)
    assert err.count("UserWarning at <string>:") == 1 and "Secretname" not in err


def test_tracebacks_keep_their_frames_and_type_but_not_the_message():
    err = stderr_of(f"""
        import logging, threading
        def read_header():
            raise ValueError("could not convert {NAME!r}")
        try:
            read_header()
        except ValueError:
            logging.getLogger("clinassist.serving.gateway.worker").exception("step failed")
        worker = threading.Thread(target=read_header, name="gateway-worker-0")
        worker.start()
        worker.join()
        read_header()
    """)
    assert err.count("in read_header") == 3 and err.count("builtins.ValueError") == 3
    assert "uncaught ValueError in gateway-worker-0" in err
    assert "uncaught ValueError in the main thread" in err
    assert "Secretname" not in err


def test_a_library_traceback_of_a_closed_connection_is_left_out():
    """pynetdicom logs `LOGGER.exception` when a socket closes mid-PDU (a peer dropping the
    connection, or the gateway's stop aborting an association): the line stays, its frames go."""
    err = stderr_of("""
        import logging
        def read_pdu():
            raise ConnectionResetError(104, "Connection reset by peer")
        try:
            read_pdu()
        except OSError as exc:
            logging.getLogger("pynetdicom.dul").exception(exc)
        try:
            read_pdu()
        except OSError:
            logging.getLogger("clinassist.serving.gateway.scp").exception("store failed")
    """)
    assert err.count("pynetdicom.dul: (<string>:") == 1 and "message withheld" in err
    assert err.count("Traceback") == 1 and "store failed" in err  # ours keep their frames
