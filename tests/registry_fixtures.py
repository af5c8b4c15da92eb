"""Bundles for the registry tests: another real, loadable triage model made from the committed
one without training (its graph with a constant added to the logit), and a gate report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from clinassist.bundle import file_sha256

COMMITTED = Path(__file__).resolve().parent.parent / "models" / "cxr_pneumonia"


def shifted_bundle(folder: Path, version: str, shift: float = 1.0,
                   source: Path = COMMITTED) -> Path:
    """`source` with `shift` added to every logit, as bundle `version` in `folder`."""
    import onnx
    from onnx import helper, numpy_helper

    shutil.copytree(source, folder)
    meta = json.loads((source / "metadata.json").read_text())
    model = onnx.load(str(source / meta["model_file"]))
    for node in model.graph.node:
        node.input[:] = ["logit_unshifted" if name == "logit" else name for name in node.input]
        node.output[:] = ["logit_unshifted" if name == "logit" else name for name in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(shift, np.float32),
                                                           "logit_shift"))
    model.graph.node.append(helper.make_node("Add", ["logit_unshifted", "logit_shift"], ["logit"]))
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / meta["model_file"]))
    meta.update(version=version, sha256=file_sha256(folder / meta["model_file"]))
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2))
    return folder


def gate_report(candidate: Path, passed: bool) -> dict:
    """A report of the gate's own shape, for the registry's checks (the gate's figures are
    tested in test_cxr_gate and test_learning_loop)."""
    from clinassist.bundle import Bundle
    from clinassist.training.cxr_gate import GateReport, ModelUnderTest

    bundle, production = Bundle.load(candidate), Bundle.load(COMMITTED)
    return GateReport(ModelUnderTest.of(bundle), ModelUnderTest.of(production), [],
                      [] if passed else ["site: the candidate is not shown better"]).as_json()
