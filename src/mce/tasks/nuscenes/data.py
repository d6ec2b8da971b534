"""The nuScenes splits in the task's layout: sensors held in memory or streamed batch by batch,
targets (vehicle, visible), calibrations and vehicle footprints as context; every sample of a
dataroot read the same way for prediction, and the predicted BEV maps written as ``.npz``."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mce.data.dataset import MultimodalData
from mce.data.lazy import LazyRows
from mce.data.nuscenes import (
    MODALITIES,
    NuScenesReader,
    NuScenesSample,
    all_tokens,
    open_nuscenes,
    split_tokens,
)
from mce.nn.bev import CAMERA_GEOMETRY, Grid3D, camera_geometry
from mce.support.checkpoint import write_atomic
from mce.tasks.base import Splits, TrainedOn
from mce.tasks.nuscenes.options import NuScenesOptions

__all__ = [
    "RADAR_CHANNELS",
    "VEHICLES",
    "VEHICLE_STATE",
    "load_splits",
    "read_new",
    "save_prediction",
]

RADAR_CHANNELS = 16
VEHICLES = "vehicles"  # context: vehicle footprint corners [N, V, 4, 3] (zero-padded)
VEHICLE_STATE = "vehicle_state"  # context: [N, V] int8, 0 padding, 1 vehicle, 2 hidden vehicle
_OUTSIDE = 1e4  # a placeholder point far outside any grid, for a sample with no point


def load_splits(options: NuScenesOptions, grid: Grid3D, data_dir: Path | None) -> Splits:
    """The official train and val splits of the dataroot ``data_dir`` (val as the test split),
    read as ``options`` say (storage, sweeps, image size, workers, file check)."""
    if data_dir is None:
        raise ValueError("the nuscenes task needs --data-dir, the nuScenes dataroot")
    nusc, reader = _open(options, grid, data_dir)
    tokens_of = {split: split_tokens(nusc, split) for split in ("train", "val")}
    if options.check_files == "true":
        reader.check_files([token for tokens in tokens_of.values() for token in tokens])
    splits = [_samples(options, nusc, reader, tokens) for tokens in tokens_of.values()]
    return Splits(train=splits[0], test=splits[1])


def read_new(
    options: NuScenesOptions, grid: Grid3D, folder: Path, trained_on: TrainedOn
) -> MultimodalData:
    """Every sample of the dataroot ``folder``, whatever its split, read as the training
    samples (its tables are needed: the calibrations and poses place each sensor)."""
    nusc, reader = _open(options, grid, folder)
    tokens = all_tokens(nusc)
    if options.check_files == "true":
        reader.check_files(tokens)
    return _samples(options, nusc, reader, tokens)


def _open(options: NuScenesOptions, grid: Grid3D, dataroot: Path) -> tuple[Any, NuScenesReader]:
    """The dataroot's tables and a reader of its samples, as ``options`` say."""
    nusc = open_nuscenes(dataroot, options.version or None)
    reader = NuScenesReader(
        nusc,
        grid,
        options.image_size,
        lidar_sweeps=options.lidar_sweeps,
        radar_sweeps=options.radar_sweeps,
    )
    return nusc, reader


def save_prediction(folder: Path, sample: MultimodalData, labels: Tensor, scores: Tensor) -> Path:
    """Write one sample's predicted BEV map as ``folder/<sample token>.npz``: ``vehicle``
    uint8 [Z, X] (1: a vehicle, probability > 0.5) and ``probability`` float32 [Z, X], in the
    task's grid (rows along the front camera's z, forward; columns along its x, right)."""
    path = Path(folder) / f"{sample.ids[0]}.npz"
    vehicle = labels.cpu().numpy().astype(np.uint8)
    probability = scores.reshape(vehicle.shape).cpu().numpy().astype(np.float32)
    write_atomic(
        path, lambda file: np.savez_compressed(file, vehicle=vehicle, probability=probability)
    )
    return path


def _samples(
    options: NuScenesOptions, nusc: Any, reader: NuScenesReader, tokens: list[str]
) -> MultimodalData:
    """The samples ``tokens`` in memory or streamed, as ``options.storage`` says."""
    if options.storage == "memory":
        return _stack(reader.read_all(tokens, workers=options.workers))
    identity = (
        f"nuscenes|{Path(nusc.dataroot).resolve()}|{nusc.version}|{options.image_size}|"
        f"{options.lidar_sweeps}|{options.radar_sweeps}"
    )
    return _streamed(reader, tokens, options.workers, identity)


def _placeholder_if_empty(cloud: np.ndarray, width: int) -> np.ndarray:
    """The cloud, or one point outside any grid when it has none (a present modality needs a
    length of at least 1)."""
    if len(cloud):
        return cloud
    point = np.zeros((1, width), dtype=np.float32)
    point[0, :3] = _OUTSIDE
    return point


def _pad_points(clouds: list[np.ndarray], width: int) -> tuple[Tensor, Tensor]:
    clouds = [_placeholder_if_empty(cloud, width) for cloud in clouds]
    longest = max(len(cloud) for cloud in clouds)
    points = torch.zeros(len(clouds), longest, width)
    lengths = torch.zeros(len(clouds), dtype=torch.int64)
    for n, cloud in enumerate(clouds):
        points[n, : len(cloud)] = torch.from_numpy(cloud)
        lengths[n] = len(cloud)
    return points, lengths


def _labels(samples: list[NuScenesSample]) -> tuple[Tensor, dict[str, Tensor]]:
    """The targets uint8 [N, 2, Z, X] = (vehicle, visible) and the context: calibrations (kept
    when the camera is masked out: no image is lost by keeping them) and vehicle footprints."""

    def stacked(name: str) -> Tensor:
        return torch.from_numpy(np.stack([getattr(sample, name) for sample in samples]))

    target = torch.stack([stacked("target"), stacked("valid")], 1).to(torch.uint8)
    context = {
        CAMERA_GEOMETRY: camera_geometry(stacked("intrinsics"), stacked("cam_from_ref")),
        **_vehicle_context(samples),
    }
    return target, context


def _stack(samples: list[NuScenesSample]) -> MultimodalData:
    """A split held in memory (images as uint8)."""
    lidar, lidar_lengths = _pad_points([s.lidar for s in samples], 4)
    radar, radar_lengths = _pad_points([s.radar for s in samples], 3 + RADAR_CHANNELS)
    target, context = _labels(samples)
    return MultimodalData(
        MODALITIES,
        {
            "camera": torch.from_numpy(np.stack([s.images for s in samples])),  # [N, 6, 3, H, W]
            "lidar": lidar,
            "radar": radar,
        },
        target,
        torch.full((len(samples),), (1 << len(MODALITIES)) - 1, dtype=torch.int64),
        {"lidar": lidar_lengths, "radar": radar_lengths},
        ids=tuple(sample.token for sample in samples),
        context=context,
    )


def _streamed(
    reader: NuScenesReader, tokens: list[str], workers: int, identity: str
) -> MultimodalData:
    """A split whose sensors are read batch by batch (:class:`~mce.data.lazy.LazyRows`); the
    targets and calibrations, from the tables alone, are held in memory."""
    if workers <= 1:
        labels = [reader.read_labels(token) for token in tokens]
    else:
        with ThreadPoolExecutor(workers) as pool:
            labels = list(pool.map(reader.read_labels, tokens))
    target, context = _labels(labels)
    height, width = reader.image_size
    identity = f"{identity}|" + hashlib.sha256("|".join(tokens).encode()).hexdigest()

    def lazy(name: str, read, shape: tuple[int, ...], dtype: torch.dtype, ragged: bool):
        return LazyRows(
            lambda position: read(tokens[position]),
            len(tokens),
            shape,
            dtype,
            f"{identity}|{name}",
            ragged=ragged,
            workers=workers,
        )

    point_width = 3 + RADAR_CHANNELS
    return MultimodalData(
        MODALITIES,
        {
            "camera": lazy("camera", reader.read_images, (6, 3, height, width), torch.uint8, False),
            "lidar": lazy(
                "lidar",
                lambda token: _placeholder_if_empty(reader.read_lidar(token), 4),
                (4,),
                torch.float32,
                True,
            ),
            "radar": lazy(
                "radar",
                lambda token: _placeholder_if_empty(reader.read_radar(token), point_width),
                (point_width,),
                torch.float32,
                True,
            ),
        },
        target,
        torch.full((len(tokens),), (1 << len(MODALITIES)) - 1, dtype=torch.int64),
        ids=tuple(tokens),
        context=context,
    )


def _vehicle_context(samples: list[NuScenesSample]) -> dict[str, Tensor]:
    """The vehicle footprints, zero-padded to the split's most: VEHICLES [N, V, 4, 3] and
    VEHICLE_STATE [N, V] int8 (0: padding, 1: a vehicle, 2: a hidden vehicle)."""
    most = max(len(sample.vehicles) for sample in samples)
    corners = torch.zeros(len(samples), most, 4, 3)
    state = torch.zeros(len(samples), most, dtype=torch.int8)
    for n, sample in enumerate(samples):
        count = len(sample.vehicles)
        corners[n, :count] = torch.from_numpy(sample.vehicles)
        state[n, :count] = 1 + torch.from_numpy(sample.hidden.astype(np.int8))
    return {VEHICLES: corners, VEHICLE_STATE: state}
