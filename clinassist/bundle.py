"""A model bundle (`models/<name>/`): metadata, integrity check and an ONNX Runtime session.

This is the contract between training and serving, so it depends on neither torch nor MONAI.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from clinassist.config import bundle_dir
from clinassist.errors import ClinassistError


class BundleError(ClinassistError):
    """A bundle is missing, incomplete or its model file does not match its metadata."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(name_or_path: str | Path) -> tuple[Path, dict]:
    """A bundle's folder and `metadata.json`, without loading its model."""
    path = Path(name_or_path)
    if not path.is_dir():
        path = bundle_dir(str(name_or_path))
    meta_file = path / "metadata.json"
    if not meta_file.is_file():
        raise BundleError(f"no model bundle at {path} (metadata.json missing)")
    return path, json.loads(meta_file.read_text())


@dataclass
class Bundle:
    path: Path
    metadata: dict
    session: ort.InferenceSession

    @classmethod
    def load(cls, name_or_path: str | Path, threads: int | None = None) -> "Bundle":
        path, metadata = read_metadata(name_or_path)
        meta_file = path / "metadata.json"
        model_file = path / metadata["model_file"]
        if not model_file.is_file():
            raise BundleError(f"{model_file} is missing")
        if file_sha256(model_file) != metadata["sha256"]:
            raise BundleError(f"{model_file} does not match the sha256 in {meta_file}")
        options = ort.SessionOptions()
        # Threads wait on the OS between runs instead of spinning: a server's ONNX Runtime
        # shares the cores with the processes that decode and encode its images.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        bundle = cls(path, metadata, session)
        bundle.check_io_spec()
        return bundle

    def check_io_spec(self) -> None:
        """The graph's input/output names and ranks must be those the metadata promises."""
        spec = self.metadata["network_data_format"]
        for kind, declared, actual in (("input", spec["inputs"], self.session.get_inputs()),
                                       ("output", spec["outputs"], self.session.get_outputs())):
            graph = {node.name: len(node.shape) for node in actual}
            promised = {name: len(entry["shape"]) for name, entry in declared.items()}
            if graph != promised:
                raise BundleError(f"{self.path}: metadata declares {kind}s {promised} "
                                  f"(name: rank) but the ONNX graph has {graph}")

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def version(self) -> str:
        return self.metadata["version"]

    def run(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        names = [output.name for output in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, inputs)))

    def run_batched(self, input_name: str, array: np.ndarray, batch_size: int = 32) -> dict:
        """Run over the first axis in batches and concatenate each output."""
        parts = [self.run(**{input_name: array[i:i + batch_size]})
                 for i in range(0, len(array), batch_size)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
