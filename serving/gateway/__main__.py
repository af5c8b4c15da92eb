"""`python -m clinassist.serving.gateway serve|status|retry`: the `clinassist gateway` command on its own."""

import argparse
import sys

from clinassist.errors import ClinassistError
from clinassist.serving.gateway.cli import register


def main(argv: list[str]) -> int:
    root = argparse.ArgumentParser(prog="python -m clinassist.serving.gateway")
    register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(["gateway", *argv])
    try:
        return args.func(args)
    except ClinassistError as error:
        print(f"clinassist: error: {error}", file=sys.stderr)
        return 2


sys.exit(main(sys.argv[1:]))
