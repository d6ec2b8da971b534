"""Data: multimodal data sets (in memory or read batch by batch), seeded missing-modality masks, readers per data set."""

from mce.data.absent import presence_from_inputs
from mce.data.dataset import Batch, MultimodalData
from mce.data.lazy import LazyRows
from mce.data.masks import (
    PRESETS,
    MaskedSplit,
    apply_missing_rates,
    apply_quota_masks,
    draw_presence,
)

__all__ = [
    "Batch",
    "LazyRows",
    "MultimodalData",
    "PRESETS",
    "MaskedSplit",
    "apply_missing_rates",
    "apply_quota_masks",
    "draw_presence",
    "presence_from_inputs",
]
