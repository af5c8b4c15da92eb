"""`python -m clinassist.serving.bentoml_main ARGS` is `python -m bentoml ARGS` (the BentoML
command line, unchanged), except that the process ends as soon as the command returns.

`clinassist serve` runs the server this way: once a stopped server has closed its port and its
workers have exited, tearing down the interpreter that imported the whole service still took
5 to 9 s on a loaded 2-core machine (BentoML's own `serve`: 9.3 s from SIGTERM to exit; this
module: 2.2 s), time a 10 s stop budget cannot spare. Nothing is left to clean then: BentoML
has run its own exit callbacks when the server stopped.
"""

from __future__ import annotations

import logging
import os
import sys

from bentoml_cli.cli import cli


def main() -> None:
    try:
        cli.main(args=sys.argv[1:], prog_name="bentoml")
        status = 0
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
