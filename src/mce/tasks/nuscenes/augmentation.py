"""Simple-BEV's training augmentation: a random reference camera per sample and step."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from mce.data.dataset import Batch
from mce.data.nuscenes import RADAR_FEATURES, draw_vehicles
from mce.nn.bev import CAMERA_GEOMETRY, Grid3D, camera_geometry, split_geometry
from mce.tasks.nuscenes.data import RADAR_CHANNELS, VEHICLE_STATE, VEHICLES

__all__ = ["RADAR_VELOCITIES", "RandomReferenceCamera"]

# columns of (vx, vy) and (vx_comp, vy_comp) in a radar point: the reference frame's x and z
RADAR_VELOCITIES = tuple(
    (3 + RADAR_FEATURES.index(x), 3 + RADAR_FEATURES.index(z))
    for x, z in (("vx", "vy"), ("vx_comp", "vy_comp"))
)


class RandomReferenceCamera:
    """Simple-BEV's training augmentation: each sample's BEV frame moved from the front camera
    to one of its six cameras drawn at random (torch's RNG, so runs stay seeded).

    The LiDAR and radar points (and the radar velocities), the cameras' reference -> camera
    transforms and the vehicle footprints move to the drawn camera's frame, and the target is
    drawn again there (:func:`~mce.data.nuscenes.draw_vehicles`, as the reader draws it). Points
    are stored unclipped, so the rotated grid's corners hold what the sensors saw there.
    Simple-BEV draws among five of the six (``refcam_id`` in [1, 5], never CAM_FRONT_LEFT);
    here all six are equally likely.
    """

    def __init__(self, grid: Grid3D) -> None:
        self.grid = grid

    def __call__(self, batch: Batch) -> Batch:
        intrinsics, cam_from_ref = split_geometry(batch.context[CAMERA_GEOMETRY])
        samples, cameras = cam_from_ref.shape[:2]
        chosen = torch.randint(0, cameras, (samples,))
        new_from_old = cam_from_ref[torch.arange(samples), chosen].double()  # [B, 4, 4]
        old_from_new = torch.linalg.inv(new_from_old)
        rotation, translation = new_from_old[:, :3, :3], new_from_old[:, :3, 3]
        context = dict(batch.context)
        moved = (cam_from_ref.double() @ old_from_new[:, None]).float()
        context[CAMERA_GEOMETRY] = camera_geometry(intrinsics, moved)
        corners = _move(batch.context[VEHICLES].double(), rotation, translation)
        context[VEHICLES] = corners.float()
        inputs = dict(batch.inputs)
        for name in ("lidar", "radar"):
            if name in inputs:
                inputs[name] = _move_points(
                    inputs[name], batch.lengths[name], rotation, translation
                )
        targets = []
        for n in range(samples):
            state = batch.context[VEHICLE_STATE][n]
            kept = state > 0
            target, valid = draw_vehicles(
                corners[n][kept].numpy(), (state[kept] == 2).numpy(), self.grid
            )
            targets.append(torch.from_numpy(np.stack([target, valid])))
        target = torch.stack(targets).to(batch.target.dtype)
        return dataclasses.replace(batch, inputs=inputs, target=target, context=context)


def _move(points: Tensor, rotation: Tensor, translation: Tensor) -> Tensor:
    """points [B, ..., 3] -> rotation [B, 3, 3] points + translation [B, 3], per sample."""
    flat = points.reshape(points.shape[0], -1, 3)
    moved = flat @ rotation.transpose(1, 2) + translation[:, None]
    return moved.reshape(points.shape)


def _move_points(
    points: Tensor, lengths: Tensor, rotation: Tensor, translation: Tensor
) -> Tensor:
    """A padded point cloud [B, P, 3 + F] in the new frame: its valid points (``lengths``; the
    padding and absent samples stay zeros); radar velocities rotate with the frame, as (vx, 0,
    vz) since the reader kept their x-z components only (exact for cameras that differ by a
    turn about the vertical; second order in their small tilts otherwise)."""
    moved = points.clone()
    xyz = _move(points[..., :3].double(), rotation, translation)
    moved[..., :3] = xyz.to(points.dtype)
    if points.shape[-1] == 3 + RADAR_CHANNELS:
        for vx, vz in RADAR_VELOCITIES:
            velocity = torch.stack(
                [points[..., vx], torch.zeros_like(points[..., vx]), points[..., vz]], -1
            ).double()
            turned = _move(velocity, rotation, torch.zeros_like(translation))
            moved[..., vx], moved[..., vz] = turned[..., 0].float(), turned[..., 2].float()
    valid = torch.arange(points.shape[1]) < lengths[:, None]
    return torch.where(valid[..., None], moved, points)
