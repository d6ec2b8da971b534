"""Data: multimodal data sets (in memory or read batch by batch), seeded missing-modality masks,
presence files and the readers of each data set's real files.

Readers return tensors: data may import the floor (:mod:`mce.support`), never the model, the
methods, the tasks or training.
"""

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
