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


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm into the Conv registered just before it (the layout of
    MONAI's ResNet), in place, so the weights that get rounded are the ones the graph uses."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for parent in list(module.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (norm_name, norm) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(parent, norm_name, nn.Identity())
    return module


def round_to_half_precision(module: nn.Module) -> nn.Module:
    """Round every float weight and buffer to the nearest float16 value, in place, so the
    weights can be stored at half size (`store_weights_as_half`) without changing the model."""
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return module


def store_weights_as_half(path: Path, min_elements: int = 1024) -> None:
    """Rewrite float32 initializers that float16 represents exactly as float16 plus a Cast back,
    halving the file while the graph computes exactly what it did."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    kept, casts = [], []
    for init in graph.initializer:
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if (values.dtype != np.float32 or values.size < min_elements
                or not np.array_equal(half.astype(np.float32), values)):
            kept.append(init)
            continue
        kept.append(numpy_helper.from_array(half, f"{init.name}.float16"))
        casts.append(helper.make_node("Cast", [f"{init.name}.float16"], [init.name],
                                      to=onnx.TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
