"""The nuScenes loss and utility: Simple-BEV's segmentation BCE and the IoU over the visible
cells."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["POS_WEIGHT", "bev_loss", "intersection_union", "iou_utility"]

POS_WEIGHT = 2.13  # Simple-BEV's positive weight of the BCE


def bev_loss(outputs: Tensor, target: Tensor) -> Tensor:
    """Per-sample loss [B]: BCE with logits (pos_weight 2.13) averaged over the visible cells.
    outputs: logits [B, 1, Z, X]; target: [B, 2, Z, X] = (vehicle, visible)."""
    vehicle, visible = target[:, 0].float(), target[:, 1].float()
    bce = F.binary_cross_entropy_with_logits(
        outputs[:, 0], vehicle, pos_weight=torch.tensor(POS_WEIGHT, device=outputs.device),
        reduction="none",
    )  # fmt: skip
    return (bce * visible).flatten(1).sum(1) / visible.flatten(1).sum(1).clamp(min=1)


def intersection_union(outputs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample (intersection, union) [B] float64 of the prediction (sigmoid > 0.5) and the
    vehicle cells, over the visible cells."""
    predicted = outputs[:, 0] > 0  # sigmoid > 0.5
    vehicle, visible = target[:, 0] > 0.5, target[:, 1] > 0.5
    intersection = (predicted & vehicle & visible).flatten(1).sum(1)
    union = ((predicted | vehicle) & visible).flatten(1).sum(1)
    return intersection.double(), union.double()


def iou_utility(outputs: Tensor, target: Tensor) -> Tensor:
    """Per-sample utility [B] in [0, 1]: IoU of the prediction (sigmoid > 0.5) with the vehicle
    cells over the visible cells; 1 when both are empty."""
    intersection, union = intersection_union(outputs, target)
    return torch.where(union > 0, intersection / union.clamp(min=1), 1.0).float()
