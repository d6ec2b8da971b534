"""The BraTS2020 splits: every case preprocessed once into a cache, the paper's seeded
219/50/100 split saved next to it, each split held in memory as float16; new cases (no
segmentation) read the same way, and their predicted label maps written as NIfTI."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mce.data.brats import (
    MODALITIES,
    BratsCache,
    BratsCase,
    brats_split,
    list_new_cases,
    load_split,
    read_new_case,
    save_split,
    write_label_map,
)
from mce.data.dataset import MultimodalData
from mce.support.bits import present_masks
from mce.tasks.base import Splits, TrainedOn

__all__ = ["SPLIT_SEED", "cache_dir_for", "load", "read_new", "save_prediction"]

SPLIT_SEED = 0
# context of new cases: the crop int64 [N, 3, 2] and the canonical grid's shape int64 [N, 3]
# (see mce.data.brats.NewCase), the files' affine float64 [N, 4, 4]
BBOX, SOURCE_SHAPE, AFFINE = "bbox", "source_shape", "affine"


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


def _padded(volumes: list[np.ndarray], dtype: type) -> np.ndarray:
    """Arrays [..., D, H, W] stacked as [N, ..., D', H', W'] of ``dtype``, zero-padded
    (background) at the far end of each of the last three axes to the largest."""
    shape = tuple(max(volume.shape[axis] for volume in volumes) for axis in (-3, -2, -1))
    stacked = np.zeros((len(volumes), *volumes[0].shape[:-3], *shape), dtype=dtype)
    for n, volume in enumerate(volumes):
        d, h, w = volume.shape[-3:]
        stacked[n, ..., :d, :h, :w] = volume
    return stacked


def _per_modality(images: np.ndarray) -> dict[str, Tensor]:
    """float16 [N, M, D, H, W] as {modality: [N, 1, D, H, W]} (views)."""
    tensor = torch.from_numpy(images)
    return {name: tensor[:, m : m + 1] for m, name in enumerate(MODALITIES)}


def _stack(cases: list[BratsCase]) -> MultimodalData:
    """The cases as one split: float16 [N, 1, D, H, W] per modality and uint8 labels
    [N, D, H, W], zero-padded (background) at the far end of each axis to the largest crop."""
    return MultimodalData(
        MODALITIES,
        _per_modality(_padded([case.image for case in cases], np.float16)),
        torch.from_numpy(_padded([case.label for case in cases], np.uint8)),
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


def read_new(folder: Path, trained_on: TrainedOn) -> MultimodalData:
    """Every case folder under ``folder`` (:func:`mce.data.brats.list_new_cases`; no
    segmentation, any sequence possibly missing), preprocessed as the training cases and held
    as float16, padded with background to the largest crop; each case's crop, grid and affine
    are its context, for :func:`save_prediction`."""
    root = Path(folder)
    cases = [read_new_case(root / name) for name in list_new_cases(root)]
    present = present_masks(torch.tensor([case.present for case in cases], dtype=torch.bool))
    context = {
        BBOX: torch.from_numpy(np.stack([case.bbox for case in cases]).astype(np.int64)),
        SOURCE_SHAPE: torch.tensor([case.source_shape for case in cases], dtype=torch.int64),
        AFFINE: torch.from_numpy(np.stack([case.affine for case in cases])),
    }
    return MultimodalData(
        MODALITIES,
        _per_modality(_padded([case.image for case in cases], np.float16)),
        torch.zeros(len(cases), dtype=torch.int64),
        present,
        ids=tuple(case.case_id for case in cases),
        context=context,
    )


def save_prediction(folder: Path, sample: MultimodalData, labels: Tensor, scores: Tensor) -> Path:
    """Write the predicted class map [D, H, W] of one case of :func:`read_new` as
    ``folder/<case>.nii.gz``: the BraTS labels {0, 1, 2, 4} in the grid and affine of the
    case's files."""
    box = sample.context[BBOX][0].numpy()
    d, h, w = (int(b - a) for a, b in box)
    path = Path(folder) / f"{sample.ids[0]}.nii.gz"
    source = tuple(int(s) for s in sample.context[SOURCE_SHAPE][0])
    write_label_map(path, labels[:d, :h, :w].cpu().numpy(), box, source, sample.context[AFFINE][0])
    return path
