"""`clinassist gateway serve|status|retry`: run the PACS gateway and manage its dead letters."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any, NoReturn

from clinassist.config import home_dir
from clinassist.serving.gateway import logs
from clinassist.serving.gateway.config import CONFIG_FILE, GatewayConfig


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `gateway` command to a CLI's subparsers."""
    gateway = subparsers.add_parser("gateway", help="the DICOM gateway between PACS and triage")
    gateway.add_argument("--config", type=Path,
                         help=f"settings file (default: $CLINASSIST_HOME/{CONFIG_FILE})")
    commands = gateway.add_subparsers(dest="gateway_command", required=True)

    serve = commands.add_parser("serve", help="receive, triage and deliver until stopped")
    serve.set_defaults(func=cmd_serve)

    status = commands.add_parser("status", help="jobs per state, and the dead-lettered jobs")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=cmd_status)

    retry = commands.add_parser("retry", help="send dead-lettered jobs through again")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--job", help="one job id, as `status` lists it")
    which.add_argument("--all", action="store_true", help="every dead-lettered job")
    retry.set_defaults(func=cmd_retry)


def load_config(args: argparse.Namespace) -> GatewayConfig:
    return GatewayConfig.load(args.config or home_dir() / CONFIG_FILE)


def cmd_serve(args: argparse.Namespace) -> NoReturn:
    from clinassist.serving.gateway.gateway import Gateway

    logs.configure()
    received: list[signal.Signals] = []
    stopped = threading.Event()

    def stop(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum))
        stopped.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    gateway = Gateway(home_dir(), load_config(args))
    gateway.start()
    gc.freeze()  # the models and tables loaded live as long as the process: never walk them
    stopped.wait()
    logging.getLogger(__name__).info("%s received: stopping", received[0].name)
    gateway.stop()
    # Everything is durable now; end at once rather than through the interpreter's shutdown,
    # which would wait for threads left busy (pynetdicom's association threads are not
    # daemons: one waiting on a silent peer holds the exit for its timeout) and free every
    # object one by one (seconds, for highdicom's tables of the standard).
    logging.shutdown()
    os._exit(0)


def cmd_status(args: argparse.Namespace) -> int:
    from clinassist.serving.gateway.gateway import open_queue

    queue = open_queue(home_dir(), load_config(args))
    dead = [{"job": job.id, "attempts": job.attempts, "error": job.last_error}
            for job in queue.jobs("dead")]
    if args.json:
        print(json.dumps({"jobs": queue.counts(), "dead": dead}, indent=2))
        return 0
    counts = queue.counts()
    print(", ".join(f"{state}: {n}" for state, n in sorted(counts.items())) or "no jobs")
    for job in dead:
        print(f"dead {job['job']} after {job['attempts']} attempt(s): {job['error']}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from clinassist.serving.gateway.gateway import open_queue

    revived = open_queue(home_dir(), load_config(args)).retry(None if args.all else args.job)
    print(f"{revived} job(s) queued again")
    return 0 if revived or args.all else 1
