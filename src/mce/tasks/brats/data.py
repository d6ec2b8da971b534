"""The BraTS2020 splits: every case preprocessed once into a cache, the paper's seeded
219/50/100 split saved next to it, each split held in memory as float16."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from mce.data.brats import MODALITIES, BratsCache, BratsCase, brats_split, load_split, save_split
from mce.data.dataset import MultimodalData
from mce.tasks.base import Splits

__all__ = ["SPLIT_SEED", "cache_dir_for", "load"]

SPLIT_SEED = 0


def cache_dir_for(root: Path) -> Path:
    """Where the preprocessed cases and the split of the folder ``root`` are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(base) / "mce" / "brats" / digest


def _split(ids: list[str], path: Path):
    """The saved split when it covers exactly ``ids``, else a fresh seeded one (saved)."""
    if path.is_file():
        split = load_split(path)
        if sorted(id_ for part in split for id_ in part) == sorted(ids):
            return split
    split = brats_split(ids, seed=SPLIT_SEED)
    save_split(path, split)
    return split


def _stack(cases: list[BratsCase]) -> MultimodalData:
    """The cases as one split: float16 [N, 1, D, H, W] per modality and uint8 labels
    [N, D, H, W], zero-padded (background) at the far end of each axis to the largest crop."""
    shape = tuple(max(case.label.shape[axis] for case in cases) for axis in range(3))
    images = np.zeros((len(cases), len(MODALITIES), *shape), dtype=np.float16)
    labels = np.zeros((len(cases), *shape), dtype=np.uint8)
    for n, case in enumerate(cases):
        d, h, w = case.label.shape
        images[n, :, :d, :h, :w] = case.image
        labels[n, :d, :h, :w] = case.label
    tensor = torch.from_numpy(images)
    return MultimodalData(
        MODALITIES,
        {name: tensor[:, m : m + 1] for m, name in enumerate(MODALITIES)},
        torch.from_numpy(labels),
        torch.full((len(cases),), (1 << len(MODALITIES)) - 1, dtype=torch.int64),
        ids=tuple(case.case_id for case in cases),  # BraTS20_Training_001, ...: presence files
    )


def load(data_dir: Path | None) -> Splits:
    """(train, validation, test) of the seeded 219/50/100 split (scaled for other folders);
    every sequence is present before masking."""
    if data_dir is None:
        raise ValueError(
            "the brats task needs --data-dir, the BraTS2020 training folder holding "
            "BraTS20_Training_XXX/ case folders"
        )
    root = Path(data_dir)
    cache_dir = cache_dir_for(root)
    cache = BratsCache(root, cache_dir)
    ids = cache.preprocess()  # names an empty folder or a broken case
    split = _split(ids, cache_dir / "split.json")
    train, validation, test = (_stack([cache.load(i) for i in part]) for part in split)
    return Splits(train=train, validation=validation, test=test)
