"""Benchmark (not a test): ONNX Runtime vs PyTorch eager for the chest-radiograph model, and
training throughput, measured in one run on real test images.

    .venv/bin/python benchmarks/cxr_inference.py [--run runs/cxr --run runs/cxr128] [--repeats 5]

The model is what `clinassist export cxr` builds from the runs: their ensemble, batch norms
folded and weights rounded to float16. When a run is missing, freshly initialised networks of
the default architecture stand in (speed does not depend on the weight values).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clinassist.training import cxr_data
from clinassist.training.cxr_export import load_ensemble
from clinassist.training.cxr_model import CxrEnsemble, ExportedCxr
from clinassist.training.cxr_train import augmentations, build_net, default_config
from clinassist.training.onnx_export import export_onnx, fold_batch_norms, store_weights_as_half


def best_seconds(fn, repeats: int) -> float:
    fn()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return min(timings)


def inference_rates(model: ExportedCxr, session, images: np.ndarray, batch: int,
                    repeats: int) -> tuple[float, float]:
    x = images[:batch]
    tensor = torch.from_numpy(x)

    def eager():
        with torch.no_grad():
            model(tensor)

    def onnx():
        session.run(["logit", "cam"], {"image": x})

    return batch / best_seconds(eager, repeats), batch / best_seconds(onnx, repeats)


def training_rate(cfg: dict, images: np.ndarray, labels: np.ndarray, steps: int) -> tuple[float, float]:
    """Images/s of forward+backward+AdamW at the configured batch size, without and with the
    per-image MONAI augmentation the training loop applies."""
    net = build_net(cfg).train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=cfg["learning_rate"])
    augment = augmentations(cfg)
    batch = cfg["batch_size"]
    x, y = torch.from_numpy(images[:batch]), torch.from_numpy(labels[:batch])

    def step(pixels):
        optimiser.zero_grad()
        net(pixels, y)["loss"].backward()
        optimiser.step()

    plain = batch / best_seconds(lambda: step(x), steps)
    augmented = batch / best_seconds(
        lambda: step(torch.stack([torch.as_tensor(augment(img)).float() for img in x])), steps)
    return plain, augmented


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append",
                        help="run directory, repeated for an ensemble (default: runs/cxr, runs/cxr128)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    runs = args.run or [Path("runs/cxr"), Path("runs/cxr128")]
    if all((run / "final").is_dir() for run in runs):
        ensemble, cfgs = load_ensemble(runs)
        weights = f"trained runs {', '.join(map(str, runs))}"
    else:
        cfgs = [default_config()]
        ensemble = fold_batch_norms(CxrEnsemble([build_net(cfgs[0])]).eval())
        weights = "untrained network of the default architecture"
    model = ExportedCxr(ensemble).eval()
    test = [r for r in cxr_data.read_manifest() if r.split == "test"][:64]
    images = cxr_data.load_pixels(test).astype(np.float32)[:, None]

    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "model.onnx"
        export_onnx(model, onnx_path, ["logit", "cam"])
        store_weights_as_half(onnx_path)
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        sizes = " + ".join(f"{cfg['image_size']} px" for cfg in cfgs)
        print(f"\nchest-radiograph model ({weights}), {sizes} in-graph, "
              f"{torch.get_num_threads()} torch threads, 224x224 inputs")
        print(f"{'batch':>6} {'PyTorch img/s':>14} {'ONNX RT img/s':>14} {'ratio':>6}")
        for batch in (1, 32):
            eager, onnx = inference_rates(model, session, images, batch, args.repeats)
            print(f"{batch:>6} {eager:>14.1f} {onnx:>14.1f} {onnx / eager:>6.2f}")
    for cfg in cfgs:
        plain, augmented = training_rate(cfg, images, cxr_data.labels(test), args.repeats)
        print(f"training at {cfg['image_size']} px (batch {cfg['batch_size']}, forward+backward+"
              f"AdamW): {plain:.1f} img/s; with MONAI augmentation: {augmented:.1f} img/s")


if __name__ == "__main__":
    main()
