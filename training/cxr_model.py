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
    """Resize (N, 1, H, W) raw pixels to a square, then normalise each image on its own: a
    z-score, or with `equalize` a histogram equalisation.

    Equalisation maps each pixel to its mid-rank among the image's pixels (over `EQUALIZE_BINS`
    grey levels between the image's minimum and maximum), scaled to zero mean and unit
    variance. The result does not depend on the image's grey-level curve at all (any
    increasing remapping of the grey levels gives nearly the same input), so the network cannot
    learn a site's or a dataset's exposure and processing curve instead of the anatomy: the
    adult NIH selection's classes differ in their histograms alone (AUC 0.80; see the card)."""

    EQUALIZE_BINS = 1024

    def __init__(self, size: int, equalize: bool = False):
        super().__init__()
        self.size, self.equalize = size, equalize

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        resized = F.interpolate(pixels, size=(self.size, self.size), mode="bilinear",
                                align_corners=False, antialias=True)
        if self.equalize:
            return equalized(resized, self.EQUALIZE_BINS)
        mean = resized.mean(dim=(2, 3), keepdim=True)
        std = resized.std(dim=(2, 3), keepdim=True)
        return (resized - mean) / (std + 1e-6)


UNIFORM_STD = math.sqrt(1 / 12)


def equalized(images: torch.Tensor, bins: int) -> torch.Tensor:
    """Each pixel's mid-rank in its image (equal grey levels share one), uniform in (0, 1),
    then centred and scaled to unit variance."""
    flat = images.reshape(images.shape[0], -1)
    low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    level = ((flat - low) / (high - low + 1e-6) * (bins - 1)).round().long()
    counts = torch.zeros(flat.shape[0], bins, dtype=flat.dtype).scatter_add(
        1, level, torch.ones_like(flat))
    mid_rank = (counts.cumsum(dim=1) - counts / 2) / flat.shape[1]
    return ((mid_rank.gather(1, level) - 0.5) / UNIFORM_STD).reshape_as(images)


class CxrNet(nn.Module):
    """Pneumonia logit and class-activation map from raw pixels.

    The backbone is MONAI's ResNet-18 layout (here usually at half width) with a stride-2 stem.
    Without the max-pool the activation map has 1/16 of the input resolution (8x8 at 128 px);
    with it, 1/32 at a quarter of the cost (7x7 at 224 px).
    """

    def __init__(self, image_size: int = 128, widths: tuple[int, ...] = (32, 64, 128, 256),
                 pos_weight: float = 1.0, max_pool: bool = False, equalize: bool = False):
        super().__init__()
        from monai.networks.nets import ResNet

        self.pos_weight = pos_weight
        self.preprocess = Preprocess(image_size, equalize)
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
