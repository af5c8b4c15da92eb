"""The chest-radiograph network: in-graph preprocessing, a MONAI ResNet, a class-activation map.

Resizing and per-image intensity normalisation are part of the module, so the ONNX graph takes
raw pixels of any size and range (8-bit JPEG or 16-bit DICOM) and training cannot drift from
serving.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Preprocess(nn.Module):
    """Resize (N, 1, H, W) raw pixels to a square and z-score each image on its own."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        resized = F.interpolate(pixels, size=(self.size, self.size), mode="bilinear",
                                align_corners=False, antialias=True)
        mean = resized.mean(dim=(2, 3), keepdim=True)
        std = resized.std(dim=(2, 3), keepdim=True)
        return (resized - mean) / (std + 1e-6)


class CxrNet(nn.Module):
    """Pneumonia logit and class-activation map from raw pixels.

    The backbone is MONAI's ResNet-18 layout (here usually at half width) with a stride-2 stem.
    Without the max-pool the activation map has 1/16 of the input resolution (8x8 at 128 px);
    with it, 1/32 at a quarter of the cost (7x7 at 224 px).
    """

    def __init__(self, image_size: int = 128, widths: tuple[int, ...] = (32, 64, 128, 256),
                 pos_weight: float = 1.0, max_pool: bool = False):
        super().__init__()
        from monai.networks.nets import ResNet

        self.pos_weight = pos_weight
        self.preprocess = Preprocess(image_size)
        self.cam_grid = math.ceil(image_size / (32 if max_pool else 16))
        self.backbone = ResNet(block="basic", layers=[2, 2, 2, 2], block_inplanes=list(widths),
                               spatial_dims=2, n_input_channels=1, conv1_t_size=7,
                               conv1_t_stride=2, no_max_pool=not max_pool, num_classes=1)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = b.act(b.bn1(b.conv1(self.preprocess(pixels))))
        if not b.no_max_pool:
            x = b.maxpool(x)
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def logit_and_cam(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.features(pixels)
        cam = torch.einsum("nchw,c->nhw", fmap, self.backbone.fc.weight[0]).unsqueeze(1)
        logit = cam.mean(dim=(1, 2, 3)) + self.backbone.fc.bias[0]
        return logit, cam

    def forward(self, pixel_values: torch.Tensor,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logit, _ = self.logit_and_cam(pixel_values)
        out = {"logits": logit}
        if labels is not None:
            out["loss"] = F.binary_cross_entropy_with_logits(
                logit, labels.float(), pos_weight=torch.tensor(self.pos_weight, device=logit.device))
        return out


class CxrEnsemble(nn.Module):
    """Members that may differ in input size: the mean of their logits, and their activation
    maps resized to the finest member's grid and averaged."""

    def __init__(self, members: list[CxrNet]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.cam_size = max(m.cam_grid for m in members)

    def logit_and_cam(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, cams = zip(*(m.logit_and_cam(pixels) for m in self.members))
        grid = (self.cam_size, self.cam_size)
        cams = [c if c.shape[-2:] == grid else
                F.interpolate(c, size=grid, mode="bilinear", align_corners=False) for c in cams]
        return torch.stack(logits).mean(dim=0), torch.stack(cams).mean(dim=0)


class ExportedCxr(nn.Module):
    """What is exported: the uncalibrated pneumonia logit and the activation map from raw pixels.

    Calibration is per population (and per site), so it is applied by the service from the
    bundle's metadata: probability = sigmoid(logit / temperature of the population)."""

    def __init__(self, net: CxrNet | CxrEnsemble):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.logit_and_cam(image)
