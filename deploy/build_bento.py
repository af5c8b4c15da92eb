"""Build the clinassist Bento from this checkout and print its tag (`make bento` runs this).

    .venv/bin/python deploy/build_bento.py            # into $BENTOML_HOME (default ~/bentoml)
    bentoml containerize clinassist:latest            # then an OCI image (needs Docker)

`bentoml build` copies its build context with `os.walk`, which does not enter symbolic links to
folders, and `clinassist/serving` and `clinassist/training` are such links (pyproject.toml). Built
from the checkout, the Bento would lack both packages (and still build, because the build imports
the service from the checkout). So the build runs on a temporary copy of what bentofile.yaml can
include, the links resolved; bentofile.yaml then picks the files, as it would from the checkout.
The copy also gets `serve-requirements.txt`, the Python packages serving needs as pyproject.toml
states them (the dependencies and the `serve` extra), which bentofile.yaml names.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = ("bentofile.yaml", "clinassist", "models")  # everything bentofile.yaml includes lies here
REQUIREMENTS = "serve-requirements.txt"
TAG_PREFIX = "__tag__:"  # how `bentoml build --output tag` prints the tag


def serve_requirements(root: Path) -> list[str]:
    """The packages the services import: the project's dependencies and its `serve` extra."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["serve"]


def write_context(root: Path, into: Path) -> None:
    """Copy the build context's parts from `root` into `into`, following symbolic links, and
    write the requirements file."""
    for name in CONTEXT:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, into / name, symlinks=False,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, into / name)
    (into / REQUIREMENTS).write_text("\n".join(serve_requirements(root)) + "\n")


def build(root: Path = ROOT) -> str:
    """Run `bentoml build` (offline: no usage tracking) on a resolved copy; return the tag."""
    with tempfile.TemporaryDirectory(prefix="clinassist-bento-") as context:
        write_context(root, Path(context))
        built = subprocess.run(
            [sys.executable, "-m", "bentoml", "build", context, "--output", "tag"],
            capture_output=True, text=True, cwd=context,
            env={**os.environ, "BENTOML_DO_NOT_TRACK": "true"})
    tags = [line.removeprefix(TAG_PREFIX) for line in built.stdout.splitlines()
            if line.startswith(TAG_PREFIX)]
    if built.returncode != 0 or len(tags) != 1:
        raise SystemExit(f"bentoml build failed (exit {built.returncode}):\n"
                         f"{built.stdout[-3000:]}{built.stderr[-3000:]}")
    return tags[0]


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(build())


if __name__ == "__main__":
    main()
