"""Ensembles and half-size weight storage: what the graph computes must not change."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from clinassist.training.cxr_model import CxrEnsemble, CxrNet, ExportedCxr
from clinassist.training.onnx_export import (export_onnx, fold_batch_norms, max_abs_difference,
                                  round_to_half_precision, store_weights_as_half)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def small_net(image_size: int, seed: int) -> CxrNet:
    """A tiny CxrNet whose batch norms hold non-trivial running statistics."""
    torch.manual_seed(seed)
    net = CxrNet(image_size, (8, 16, 32, 32)).train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 1, 40, 36) * 255)
    return net.eval()


def pixels(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, 4095, (3, 1, 70, 50))).float()


def test_folding_batch_norms_removes_them_without_changing_the_output():
    net = small_net(32, 0)
    with torch.no_grad():
        logit, cam = net.logit_and_cam(pixels())
        fold_batch_norms(net)
        folded_logit, folded_cam = net.logit_and_cam(pixels())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert torch.allclose(logit, folded_logit, atol=1e-5)
    assert torch.allclose(cam, folded_cam, atol=1e-5)


def test_an_ensemble_averages_logits_and_puts_activation_maps_on_the_finest_grid():
    coarse, fine = small_net(32, 1), small_net(64, 2)
    with torch.no_grad():
        logit, cam = CxrEnsemble([coarse, fine]).logit_and_cam(pixels())
        expected = (coarse.logit_and_cam(pixels())[0] + fine.logit_and_cam(pixels())[0]) / 2
        alone = CxrEnsemble([fine]).logit_and_cam(pixels())
    assert torch.allclose(logit, expected, atol=1e-6)
    assert cam.shape == (3, 1, 4, 4)
    assert torch.equal(alone[0], fine.logit_and_cam(pixels())[0])


def test_a_max_pool_member_computes_what_the_monai_resnet_computes_on_a_coarser_grid():
    torch.manual_seed(6)
    pooled = CxrNet(64, (8, 16, 32, 32), max_pool=True).eval()
    with torch.no_grad():
        logit, cam = pooled.logit_and_cam(pixels())
        reference = pooled.backbone(pooled.preprocess(pixels()))[:, 0]
        _, ensemble_cam = CxrEnsemble([pooled, small_net(48, 7)]).logit_and_cam(pixels())
    assert cam.shape == (3, 1, 2, 2) and pooled.cam_grid == 2
    assert torch.allclose(logit, reference, atol=1e-5)
    assert ensemble_cam.shape == (3, 1, 3, 3)


@pytest.mark.parametrize(("size", "max_pool"), [(100, False), (100, True), (224, True), (96, False)])
def test_the_announced_activation_grid_is_the_one_computed(size, max_pool):
    net = CxrNet(size, (8, 8, 8, 8), max_pool=max_pool).eval()
    with torch.no_grad():
        _, cam = net.logit_and_cam(pixels())
    assert cam.shape[-2:] == (net.cam_grid, net.cam_grid)


def test_half_size_weights_shrink_the_file_and_keep_what_the_graph_computes(tmp_path):
    model = ExportedCxr(round_to_half_precision(fold_batch_norms(CxrEnsemble(
        [small_net(32, 3), small_net(48, 4)])))).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, path, ["logit", "cam"])
    full_size = path.stat().st_size
    store_weights_as_half(path)
    assert path.stat().st_size < 0.7 * full_size  # biases and the graph itself stay full size
    batches = [pixels(1).numpy(), pixels(2).numpy()]
    assert max_abs_difference(model, path, batches, "logit") <= 1e-5
    assert max_abs_difference(model, path, batches, "cam") <= 1e-5
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_weights_that_float16_cannot_hold_exactly_stay_float32(tmp_path):
    model = ExportedCxr(fold_batch_norms(CxrEnsemble([small_net(32, 5)]))).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, path, ["logit", "cam"])
    before = path.read_bytes()
    store_weights_as_half(path)
    assert abs(path.stat().st_size - len(before)) < 1024
    assert max_abs_difference(model, path, [pixels(3).numpy()], "logit") <= 1e-5
