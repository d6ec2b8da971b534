"""BraTS2020 (Section 4.1, Tables 1 and 4): brain-tumour segmentation from T1, T1c, FLAIR, T2.

``--data-dir`` is the official training folder (``BraTS20_Training_XXX/...nii.gz``, see
:mod:`mce.data.brats`). Every case is preprocessed once into a cache
(``$XDG_CACHE_HOME/mce/brats/<folder hash>``, or ``~/.cache``), and the paper's 219/50/100
train/validation/test split is drawn with seed 0 and saved there as ``split.json`` (reused while
the folder holds the same cases). The three splits are held in memory as float16, padded with
background to each split's largest brain crop (about 36 MB a case: some 13 GB for all 369).

Recipe: a 3D U-Net encoder per modality (mmFormer's: 5 levels from 8 channels, an intra-modal
Transformer at the bottleneck), the reconstruction Transformer on the bottleneck voxels, an
mmFormer fusion (inter-modal Transformer, per-scale fusion of the present modalities' skips), a
U-Net decoder. Unimodal heads (L_single) are light by default: per level a 1x1x1 conv to the
class logits, upsampled and summed, a read-out of what each encoder holds; ``head=decoder``
gives mmFormer's ``Decoder_sep`` instead, one shared U-Net decoder run on each modality's
features, at four decoder passes a sample (on the CPU at 32^3 it took 1.0 s of a 1.7 s MCE
step). The upper bounds U_m come from a separate 3D U-Net per sequence (encoder + decoder),
scored on every training step's own crop (:class:`mce.lce.BatchUpperBounds`). Loss:
cross-entropy + soft Dice per sample; utility: mean Dice over WT, TC and ET of the argmax, per
row. Training: random 80^3 crops, half of them centred on tumour; AdamW 2e-4 (weight decay
1e-4), poly decay 0.9, batch 1, 400 epochs (Table 1).
Evaluation: a sliding window (80^3, overlap 0.5) over whole volumes; Dice WT, TC, ET and
post-processed ET for each of the 15 combinations and averaged.

Missing rates are given per modality in the order (t1, t1ce, flair, t2). The presets a-f are
the paper's settings over (T1/T1c, FLAIR, T2), T1 and T1c sharing a rate: ``a`` = (0.2, 0.5, 0.8)
gives (0.2, 0.2, 0.5, 0.8); the default is Fig. 9's (0.8, 0.5, 0.2).

Options (``--task-option NAME=VALUE``): ``crop`` (80; the training crop and window side, a
multiple of 2^(levels-1)), ``base`` (8; channels of the first level), ``levels`` (5), ``head``
(light or decoder). Smaller
values give a quick model for smoke tests and CPU runs, e.g. ``crop=32 base=4 levels=4``.
"""

from __future__ import annotations

import hashlib
import os
from itertools import permutations
from pathlib import Path

import numpy as np
import torch

from mce.config import HyperParameters
from mce.data.brats import MODALITIES, BratsCache, BratsCase, brats_split, load_split, save_split
from mce.data.dataset import MultimodalData
from mce.dense import DenseMultimodalModel
from mce.methods.redcore import RedCoreConfig
from mce.model import UnimodalModel
from mce.nn.reconstruction import ReconstructionTransformer
from mce.nn.unet3d import (
    BottleneckFusion,
    LinearReadout3D,
    SkipFusion,
    UNetDecoder3D,
    UNetEncoder3D,
    level_channels,
)
from mce.segmentation import (
    SlidingWindow,
    TumourCrop,
    dice_ce_loss,
    dice_utility,
    evaluate_segmentation,
    evaluate_segmentation_heads,
)
from mce.tasks.base import Splits, Task, inputs_transform

__all__ = ["TASK", "PRESETS", "OPTIONS", "brats_task", "build_model", "load"]

NUM_CLASSES = 4  # background, NCR/NET, edema, enhancing tumour
SPLIT_SEED = 0
OPTIONS: dict[str, int | str] = {"crop": 80, "base": 8, "levels": 5, "head": "light"}
HEADS = ("light", "decoder")
ROW_MEMORY_GB = 8.0  # activations of one chunk of rows (--row-memory-gb)

# (T1/T1c, FLAIR, T2) settings a-f -> one rate per modality of MODALITIES (t1, t1ce, flair, t2)
PRESETS: dict[str, tuple[float, ...]] = {
    name: (t1, t1, flair, t2)
    for name, (t1, flair, t2) in zip("abcdef", permutations((0.2, 0.5, 0.8)))
}


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


def _heads(width: int) -> int:
    return next(h for h in (8, 4, 2, 1) if width % h == 0)


def _encoder(crop: int, base: int, levels: int) -> UNetEncoder3D:
    width = base << (levels - 1)
    return UNetEncoder3D(base, levels, crop >> (levels - 1), heads=_heads(width), mlp_dim=4 * width)


def build_model(
    crop: int = 80, base: int = 8, levels: int = 5, head: str = "light"
) -> DenseMultimodalModel:
    """The 3D U-Net + mmFormer network for ``crop``^3 inputs (see the module doc); ``head``:
    the unimodal heads, a :class:`LinearReadout3D` per modality ("light") or one shared
    :class:`UNetDecoder3D` ("decoder", mmFormer's ``Decoder_sep``)."""
    channels = level_channels(base, levels)
    width, grid = channels[-1], crop >> (levels - 1)
    heads = _heads(width)
    if head == "decoder":
        shared = UNetDecoder3D(base, levels, NUM_CLASSES)
        unimodal_heads = {name: shared for name in MODALITIES}
    else:
        unimodal_heads = {name: LinearReadout3D(base, levels, NUM_CLASSES) for name in MODALITIES}
    return DenseMultimodalModel(
        MODALITIES,
        encoders={name: _encoder(crop, base, levels) for name in MODALITIES},
        heads=unimodal_heads,
        fusion=BottleneckFusion(len(MODALITIES), width, grid, heads=heads, mlp_dim=4 * width),
        skip_fusions=[SkipFusion(len(MODALITIES), c) for c in channels[:-1]],
        decoder=UNetDecoder3D(base, levels, NUM_CLASSES),
        reconstruction=ReconstructionTransformer(
            len(MODALITIES), width, heads=heads, ff_dim=4 * width
        ),
        channels=channels,
        row_memory_gb=ROW_MEMORY_GB,
    )


def build_unimodal(crop: int = 80, base: int = 8, levels: int = 5) -> UnimodalModel:
    """The unimodal model of the upper bounds: the modality's encoder and a full U-Net decoder
    (a 3D U-Net on one sequence)."""
    return UnimodalModel(_encoder(crop, base, levels), UNetDecoder3D(base, levels, NUM_CLASSES))


def brats_task(crop: int = 80, base: int = 8, levels: int = 5, head: str = "light") -> Task:
    """The BraTS2020 task with the given crop, network size and unimodal heads (its
    ``options``).

    Raises:
        ValueError: ``crop`` not a positive multiple of 2^(levels-1) with a bottleneck of at
            least 2 voxels a side, ``base`` < 1, ``levels`` < 2, or an unknown ``head``.
    """
    if levels < 2 or base < 1:
        raise ValueError(f"brats needs levels >= 2 and base >= 1, got {levels} and {base}")
    if head not in HEADS:
        raise ValueError(f"brats head must be one of {', '.join(HEADS)}, got {head!r}")
    stride = 1 << (levels - 1)
    if crop % stride or crop // stride < 2:
        raise ValueError(
            f"brats crop {crop} must be a multiple of 2^(levels-1) = {stride} with at least 2 "
            f"bottleneck voxels a side (crop >= {2 * stride})"
        )
    roi = (crop,) * 3
    window = SlidingWindow(roi)
    return Task(
        name="brats",
        modalities=MODALITIES,
        load=load,
        build_model=lambda: build_model(crop, base, levels, head),
        build_unimodal=lambda modality: build_unimodal(crop, base, levels),
        loss=dice_ce_loss,
        utility=dice_utility,
        metric_name="Dice (mean of WT, TC, ET)",
        needs_data_dir=True,
        presets=PRESETS,
        augment=inputs_transform(TumourCrop(roi)),
        inference_batch=1,
        infer=lambda model, x: window(model, x),
        evaluate=lambda model, data, device, progress: evaluate_segmentation(
            model, data, window, device=device, progress=progress
        ),
        evaluate_heads=lambda model, data, device: evaluate_segmentation_heads(
            model, data, window, device=device
        ),
        options={"crop": crop, "base": base, "levels": levels, "head": head},
        configure=brats_task,
        # RedCore's schedule at batch 1: 219 training cases x 400 epochs
        # RedCore's schedule carried over to batch 1 and the run's length
        method_options={"redcore": RedCoreConfig(schedule="released")},
        hparams=HyperParameters(
            epochs=400,  # Table 1
            batch_size=1,
            optimizer="adamw",
            lr=2e-4,
            weight_decay=1e-4,  # mmFormer
            lr_schedule="poly",
            lr_power=0.9,
            grad_clip=0.0,  # mmFormer does not clip
            pretrain_steps=4000,
            pretrain_eval_every=500,
            pretrain_patience=3,
            missing_rates=PRESETS["f"],  # (T1/T1c, FLAIR, T2) = (0.8, 0.5, 0.2), Fig. 9
        ),
    )


TASK = brats_task(**OPTIONS)
