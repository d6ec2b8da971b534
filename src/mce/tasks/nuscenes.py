"""nuScenes (Section 4.1, Tables 1 and 3): vehicle segmentation in bird's-eye view from camera,
LiDAR and radar, after Simple-BEV.

``--data-dir`` is the dataroot nuscenes-devkit opens (see :mod:`mce.data.nuscenes`;
``pip install ".[nuscenes]"``). Training uses the official train split, and every score the val
split (as Simple-BEV and the paper), with the front camera as the reference frame.

Modalities are (camera, lidar, radar), the paper's (C, L, R), so the presets a-f mean what
Table 3 means. Recipe: a ResNet-18 camera trunk (stride-8 features; ImageNet weights from a
local torchvision ``resnet18`` state-dict file with ``--task-option camera_weights=PATH``,
random initialisation otherwise) lifted to the voxel grid by projecting voxel centres into each
camera (bilinear sampling, mean over the cameras that see a voxel) and compressed over height;
LiDAR occupancy and radar features rasterised to the same grid on the model's device; each
modality ends in BEV features [128, 200, 200]; the reconstruction Transformer works per BEV cell;
concatenation fusion, a ResNet-style BEV decoder, one logit per cell. Loss: Simple-BEV's
segmentation BCE (pos_weight 2.13, mean over the visible cells) without its learned uncertainty
weight (x10 and exp(-w)) and without its centre and offset heads; utility: the IoU of a row's
prediction (sigmoid > 0.5) over the visible cells. Evaluation: dataset-level IoU (sum of intersections over sum of unions,
Simple-BEV's protocol) per combination and the average over the 7.

The splits are read once and held in memory, the images as uint8 (their calibrations in the
samples' ``context``, which masking keeps): about 6.5 MB a sample at 448 x 800 (2.1 GB for
v1.0-mini's 323 training samples), too much for v1.0-trainval's 28,130 at full resolution (a
streaming loader is not part of this task yet). Upper-bound models move their batches to the device one at a time and are
scored one sample at a time.

Options (``--task-option NAME=VALUE``): ``image_height`` (448), ``image_width`` (800),
``cells`` (200 BEV cells a side over 100 m), ``height_bins`` (8), ``dim`` (128), ``lidar_sweeps``
(1), ``radar_sweeps`` (5), ``camera_weights`` ("": random init), ``version`` ("": the one
version folder found), ``workers`` (4 threads reading samples). E.g. ``image_height=56 image_width=96 cells=32 dim=16`` for a CPU run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from mce.config import HyperParameters
from mce.data.dataset import MultimodalData
from mce.data.nuscenes import (
    MODALITIES,
    NuScenesReader,
    NuScenesSample,
    open_nuscenes,
    split_tokens,
)
from mce.dense import DenseMultimodalModel
from mce.evaluate import Evaluation, combination_name
from mce.methods.redcore import batch_one_config
from mce.model import combination_rows
from mce.nn.bev import (
    CAMERA_GEOMETRY,
    BevDecoder,
    CameraEncoder,
    ConcatFusion2d,
    Grid3D,
    PointEncoder,
    camera_geometry,
)
from mce.nn.reconstruction import ReconstructionTransformer
from mce.pretrain import UnimodalModel
from mce.tasks.base import Splits, Task

__all__ = ["TASK", "OPTIONS", "nuscenes_task", "bev_loss", "iou_utility", "evaluate_bev"]

OPTIONS: dict[str, int | str] = {
    "image_height": 448,
    "image_width": 800,
    "cells": 200,
    "height_bins": 8,
    "dim": 128,
    "lidar_sweeps": 1,
    "radar_sweeps": 5,
    "camera_weights": "",
    "version": "",
    "workers": 4,
}
POS_WEIGHT = 2.13  # Simple-BEV's positive weight of the BCE
RADAR_CHANNELS = 16
_OUTSIDE = 1e4  # a placeholder point far outside any grid, for a sample with no point


def bev_loss(outputs: Tensor, target: Tensor) -> Tensor:
    """Per-sample loss [B]: BCE with logits (pos_weight 2.13) averaged over the visible cells.
    outputs: logits [B, 1, Z, X]; target: [B, 2, Z, X] = (vehicle, visible)."""
    vehicle, visible = target[:, 0].float(), target[:, 1].float()
    bce = F.binary_cross_entropy_with_logits(
        outputs[:, 0], vehicle, pos_weight=torch.tensor(POS_WEIGHT, device=outputs.device),
        reduction="none",
    )  # fmt: skip
    return (bce * visible).flatten(1).sum(1) / visible.flatten(1).sum(1).clamp(min=1)


def _intersection_union(outputs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    predicted = outputs[:, 0] > 0  # sigmoid > 0.5
    vehicle, visible = target[:, 0] > 0.5, target[:, 1] > 0.5
    intersection = (predicted & vehicle & visible).flatten(1).sum(1)
    union = ((predicted | vehicle) & visible).flatten(1).sum(1)
    return intersection.double(), union.double()


def iou_utility(outputs: Tensor, target: Tensor) -> Tensor:
    """Per-sample utility [B] in [0, 1]: IoU of the prediction (sigmoid > 0.5) with the vehicle
    cells over the visible cells; 1 when both are empty."""
    intersection, union = _intersection_union(outputs, target)
    return torch.where(union > 0, intersection / union.clamp(min=1), 1.0).float()


@torch.no_grad()
def evaluate_bev(
    model, data: MultimodalData, device: torch.device | str = "cpu", progress: bool = True
) -> Evaluation:
    """Dataset-level IoU (sum of intersections / sum of unions over the split, Simple-BEV's
    protocol) for every non-empty combination, all combinations of a batch in one forward;
    ``metrics["sample_iou"]``: the mean per-sample IoU (the utility)."""
    model.eval()
    combos = list(range(1, 1 << model.num_modalities))
    sums = torch.zeros(len(combos), 3, dtype=torch.float64)  # intersection, union, utility
    counts = torch.zeros(len(combos), dtype=torch.float64)
    for batch in tqdm(data.batches(1), total=len(data), desc="evaluate", disable=not progress):
        batch = batch.to(device)
        h = model.encode(batch.inputs, batch.present, batch.lengths, batch.context)
        rows, which = combination_rows(batch.present, combos)
        _, outputs = model.forward_rows(h, rows)
        target = batch.target[rows[:, 0]]
        intersection, union = _intersection_union(outputs, target)
        values = torch.stack([intersection, union, iou_utility(outputs, target).double()], 1)
        sums.index_add_(0, which.cpu(), values.cpu())
        counts.index_add_(0, which.cpu(), torch.ones(len(which), dtype=torch.float64))
    names = {i: combination_name(c, model.modalities) for i, c in enumerate(combos)}
    kept = [i for i in range(len(combos)) if counts[i] > 0]
    scores = {names[i]: float(sums[i, 0] / sums[i, 1]) if sums[i, 1] > 0 else 1.0 for i in kept}
    sample = {names[i]: float(sums[i, 2] / counts[i]) for i in kept}
    for table in (scores, sample):
        table["average"] = sum(table.values()) / len(table)
    return Evaluation(scores, {"sample_iou": sample})


def _pad_points(clouds: list[np.ndarray], width: int) -> tuple[Tensor, Tensor]:
    longest = max(1, *(len(cloud) for cloud in clouds))
    points = torch.zeros(len(clouds), longest, width)
    lengths = torch.zeros(len(clouds), dtype=torch.int64)
    for n, cloud in enumerate(clouds):
        if len(cloud):
            points[n, : len(cloud)] = torch.from_numpy(cloud)
            lengths[n] = len(cloud)
        else:  # a present modality needs a length >= 1: one point outside the grid
            points[n, 0, :3] = _OUTSIDE
            lengths[n] = 1
    return points, lengths


def _stack(samples: list[NuScenesSample]) -> MultimodalData:
    def stacked(name: str) -> Tensor:
        return torch.from_numpy(np.stack([getattr(sample, name) for sample in samples]))

    lidar, lidar_lengths = _pad_points([s.lidar for s in samples], 4)
    radar, radar_lengths = _pad_points([s.radar for s in samples], 3 + RADAR_CHANNELS)
    return MultimodalData(
        MODALITIES,
        {
            "camera": stacked("images"),  # uint8 [N, 6, 3, H, W]
            "lidar": lidar,
            "radar": radar,
        },
        torch.stack([stacked("target"), stacked("valid")], 1),
        torch.full((len(samples),), (1 << len(MODALITIES)) - 1, dtype=torch.int64),
        {"lidar": lidar_lengths, "radar": radar_lengths},
        ids=tuple(sample.token for sample in samples),
        # the calibrations stay when the camera is masked out (no image is lost by keeping them)
        context={CAMERA_GEOMETRY: camera_geometry(stacked("intrinsics"), stacked("cam_from_ref"))},
    )


def _grid(cells: int, height_bins: int) -> Grid3D:
    return Grid3D(cells=cells, half_extent=50.0, height_bins=height_bins, y_min=-4.0, y_max=6.0)


class _LightHead(nn.Module):
    """A unimodal head: a 1x1 conv from a modality's BEV features to the logit."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.read = nn.Conv2d(dim, 1, 1)

    def forward(self, features) -> Tensor:
        return self.read(features[-1] if isinstance(features, (tuple, list)) else features)


def nuscenes_task(
    image_height: int = 448,
    image_width: int = 800,
    cells: int = 200,
    height_bins: int = 8,
    dim: int = 128,
    lidar_sweeps: int = 1,
    radar_sweeps: int = 5,
    camera_weights: str = "",
    version: str = "",
    workers: int = 4,
) -> Task:
    """The nuScenes task with the given resolution and sensor settings (its ``options``)."""
    for name, value in (("image_height", image_height), ("image_width", image_width),
                        ("cells", cells), ("height_bins", height_bins), ("dim", dim)):  # fmt: skip
        if value < 4:
            raise ValueError(f"nuscenes {name} must be at least 4, got {value}")
    if cells % 4:
        raise ValueError(
            f"nuscenes cells must be a multiple of 4 (the decoder halves twice), got {cells}"
        )
    grid = _grid(cells, height_bins)
    image_size = (image_height, image_width)

    def encoders() -> dict[str, nn.Module]:
        return {
            "camera": CameraEncoder(grid, image_size, dim, camera_weights or None),
            "lidar": PointEncoder(grid, features=0, dim=dim),
            "radar": PointEncoder(grid, features=RADAR_CHANNELS, dim=dim),
        }

    def build_model() -> DenseMultimodalModel:
        return DenseMultimodalModel(
            MODALITIES,
            encoders=encoders(),
            heads={name: _LightHead(dim) for name in MODALITIES},
            fusion=ConcatFusion2d(len(MODALITIES), dim),
            skip_fusions=[],
            decoder=BevDecoder(dim),
            # no dropout: the rows' modules are then the same in training and eval, so MCE's
            # clean utilities need no second pass over the rows
            reconstruction=ReconstructionTransformer(
                len(MODALITIES), dim, heads=4, ff_dim=2 * dim, dropout=0.0
            ),
            channels=(dim,),
            row_memory_gb=8.0,
        )

    def build_unimodal(modality: str) -> UnimodalModel:
        return UnimodalModel(encoders()[modality], BevDecoder(dim))

    def load(data_dir: Path | None) -> Splits:
        if data_dir is None:
            raise ValueError("the nuscenes task needs --data-dir, the nuScenes dataroot")
        nusc = open_nuscenes(data_dir, version or None)
        reader = NuScenesReader(
            nusc,
            grid,
            image_size,
            lidar_sweeps=lidar_sweeps,
            radar_sweeps=radar_sweeps,
        )
        train, val = (
            _stack(reader.read_all(split_tokens(nusc, split), workers=workers))
            for split in ("train", "val")
        )
        return Splits(train=train, test=val)

    return Task(
        name="nuscenes",
        modalities=MODALITIES,
        load=load,
        build_model=build_model,
        build_unimodal=build_unimodal,
        loss=bev_loss,
        utility=iou_utility,
        metric_name="IoU (vehicle, dataset-level)",
        needs_data_dir=True,
        inference_batch=1,
        evaluate=lambda model, data, device, progress: evaluate_bev(model, data, device, progress),
        options={
            "image_height": image_height,
            "image_width": image_width,
            "cells": cells,
            "height_bins": height_bins,
            "dim": dim,
            "lidar_sweeps": lidar_sweeps,
            "radar_sweeps": radar_sweeps,
            "camera_weights": camera_weights,
            "version": version,
            "workers": workers,
        },
        configure=nuscenes_task,
        method_options={"redcore": batch_one_config(2 * 28_130)},  # RedCore's schedule, batch 1
        hparams=HyperParameters(
            epochs=2,  # Table 1's 50k iterations at batch 1: 2 x 28,130 = 56,260 steps
            batch_size=1,
            optimizer="adamw",
            lr=3e-4,
            lr_schedule="onecycle",
            weight_decay=1e-7,  # Simple-BEV
            grad_clip=5.0,  # Simple-BEV
            pretrain_steps=2000,
            pretrain_eval_every=250,
            pretrain_patience=3,
            missing_rates=(0.2, 0.5, 0.8),  # setting a: (C, L, R)
        ),
    )


TASK = nuscenes_task()
