"""Data: in-memory multimodal data sets, seeded missing-modality masks, readers per data set."""

from mce.data.dataset import Batch, MultimodalData
from mce.data.masks import PRESETS, MaskedSplit, apply_missing_rates, draw_presence

__all__ = [
    "Batch",
    "MultimodalData",
    "PRESETS",
    "MaskedSplit",
    "apply_missing_rates",
    "draw_presence",
]
