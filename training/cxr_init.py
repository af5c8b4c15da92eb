"""Where a fine-tuning run starts: the weights of a trained run, or of one member of a bundle.

A bundle stores its members with batch norms folded into the convolutions and the weights
rounded to float16 (see `onnx_export`), so a member is rebuilt in that folded form (each
convolution with a bias, no batch norm) and fine-tuned as such; the run's config records it
(`folded_batch_norms: true`) so that the run loads the same architecture again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clinassist.errors import ClinassistError
from clinassist.training.cxr_model import CxrEnsemble, CxrNet

ARCHITECTURE_KEYS = ("image_size", "widths", "max_pool", "equalize", "folded_batch_norms")


class InitError(ClinassistError):
    """The run or bundle to start from cannot give the network's first weights."""


def source_config(source: Path, member: int = 0) -> dict:
    """The architecture of the run or bundle member at `source`."""
    import json

    import yaml

    if (source / "final" / "config.yaml").is_file():
        cfg = yaml.safe_load((source / "final" / "config.yaml").read_text())
    elif (source / "metadata.json").is_file():
        members = json.loads((source / "metadata.json").read_text())["training_configs"]
        if not 0 <= member < len(members):
            raise InitError(f"{source} has {len(members)} member(s); there is no member {member}")
        cfg = {**members[member], "folded_batch_norms": True}
    else:
        raise InitError(f"{source} is neither a training run (final/config.yaml) nor a model "
                        "bundle (metadata.json)")
    flags = ("max_pool", "equalize", "folded_batch_norms")
    return {key: cfg.get(key, False if key in flags else None) for key in ARCHITECTURE_KEYS}


def initial_state(source: Path, net: CxrNet, member: int = 0) -> dict[str, torch.Tensor]:
    """The state dict for `net` (built with `source_config(source)`) from the run or bundle."""
    if (source / "final" / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(source / "final" / "model.safetensors"))
    return rebuild_bundle(source).members[member].state_dict()


def rebuild_bundle(bundle: Path) -> CxrEnsemble:
    """The bundle's members as PyTorch modules (folded form), checked against its ONNX graph.

    Convolution weights keep their parameter names in the graph. The classifier row and bias
    of each member are constants the exporter names `select`, `select_1`, `select_2`, ... in
    member order (row, bias, row, bias, ...); the parity check below proves the mapping."""
    import json

    import onnx
    from onnx import numpy_helper

    from clinassist.training.cxr_train import build_net

    meta = json.loads((bundle / "metadata.json").read_text())
    graph = onnx.load(str(bundle / meta["model_file"])).graph
    arrays = {i.name.removesuffix(".float16"): np.array(numpy_helper.to_array(i), np.float32)
              for i in graph.initializer}
    classifier = [arrays[name] for name in arrays if name.split("_")[0] == "select"]
    members = []
    for index, cfg in enumerate(meta["training_configs"]):
        net = build_net({**cfg, "folded_batch_norms": True}).eval()
        prefix = f"net.members.{index}."
        state = {name[len(prefix):]: torch.from_numpy(value) for name, value in arrays.items()
                 if name.startswith(prefix)}
        state["backbone.fc.weight"] = torch.from_numpy(classifier[2 * index])[None]
        state["backbone.fc.bias"] = torch.from_numpy(classifier[2 * index + 1]).reshape(1)
        try:
            net.load_state_dict(state)
        except RuntimeError as error:
            raise InitError(f"{bundle} member {index} does not fit its recorded architecture: "
                            f"{str(error)[:200]}") from None
        members.append(net)
    ensemble = CxrEnsemble(members).eval()
    check_rebuilt(ensemble, bundle / meta["model_file"])
    return ensemble


def check_rebuilt(ensemble: CxrEnsemble, onnx_path: Path, tolerance: float = 1e-3) -> None:
    import onnxruntime as ort

    image = (np.random.default_rng(0).random((2, 1, 160, 144)) * 4095).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(["logit"], {"image": image})[0]
    with torch.no_grad():
        rebuilt = ensemble.logit_and_cam(torch.from_numpy(image))[0].numpy()
    if np.max(np.abs(rebuilt - expected)) > tolerance:
        raise InitError(f"{onnx_path}: the weights read from the graph do not reproduce its "
                        "logits; this bundle's layout is not one this version can fine-tune")
