"""ONNX export shared by every model: one file, dynamic batch and image size, a parity measure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 18
INPUT_NAME = "image"


def export_onnx(model: nn.Module, path: Path, output_names: list[str]) -> None:
    """Export `model(image)` with `image` of shape (N, 1, H, W), all of N, H, W dynamic."""
    from torch.export import Dim

    example = torch.rand(2, 1, 256, 224) * 4095
    dims = {0: Dim("batch"), 2: Dim("height", min=16), 3: Dim("width", min=16)}
    torch.onnx.export(model.eval(), (example,), str(path), dynamo=True, external_data=False,
                      opset_version=OPSET, input_names=[INPUT_NAME], output_names=output_names,
                      dynamic_shapes={INPUT_NAME: dims}, verbose=False)


def max_abs_difference(model: nn.Module, onnx_path: Path, batches: list[np.ndarray],
                       output_name: str) -> float:
    """Largest |PyTorch - ONNX Runtime| on one output over the given input batches."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    worst = 0.0
    for batch in batches:
        with torch.no_grad():
            expected = model(torch.from_numpy(batch))
        expected = expected[names.index(output_name)] if isinstance(expected, tuple) else expected
        actual = session.run([output_name], {INPUT_NAME: batch})[0]
        worst = max(worst, float(np.max(np.abs(expected.numpy() - actual))))
    return worst
