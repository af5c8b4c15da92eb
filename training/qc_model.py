"""The pixel quality-control network: which of the QC classes an image shows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clinassist.training.cxr_model import Preprocess
from clinassist.training.qc_data import ACCEPTED_CLASS, QC_CLASSES


class QcNet(nn.Module):
    """A small MONAI ResNet over the same in-graph preprocessing as the triage model."""

    def __init__(self, image_size: int = 64, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        from monai.networks.nets import ResNet

        self.preprocess = Preprocess(image_size)
        self.backbone = ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=list(widths),
                               spatial_dims=2, n_input_channels=1, conv1_t_stride=2,
                               num_classes=len(QC_CLASSES))

    def forward(self, pixel_values: torch.Tensor,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.backbone(self.preprocess(pixel_values))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
        return out


class QcProbabilities(nn.Module):
    """What is exported: class probabilities from raw pixels, with `accept_offset` added to
    the accepted class's logit (the acceptance prior fitted on validation; see qc_acceptance)."""

    def __init__(self, net: QcNet, accept_offset: float = 0.0):
        super().__init__()
        self.net = net
        offset = torch.zeros(len(QC_CLASSES))
        offset[ACCEPTED_CLASS] = accept_offset
        self.register_buffer("offset", offset)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(image)["logits"] + self.offset, dim=1)
