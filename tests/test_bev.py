"""BEV ops against loop references: point rasterisation and camera lifting."""

from __future__ import annotations

import math

import pytest
import torch

from mce.nn.bev import (
    BevDecoder,
    CameraEncoder,
    Grid3D,
    PointEncoder,
    camera_geometry,
    lift_cameras,
    rasterize_points,
    split_geometry,
    voxel_centres,
)

GRID = Grid3D(cells=10, half_extent=5.0, height_bins=3, y_min=-1.5, y_max=1.5)


def _cell(point: list[float], grid: Grid3D) -> tuple[int, int, int] | None:
    size = 2 * grid.half_extent / grid.cells
    height = (grid.y_max - grid.y_min) / grid.height_bins
    x = math.floor((point[0] + grid.half_extent) / size)
    z = math.floor((point[2] + grid.half_extent) / size)
    y = math.floor((point[1] - grid.y_min) / height)
    inside = 0 <= x < grid.cells and 0 <= z < grid.cells and 0 <= y < grid.height_bins
    return (z, y, x) if inside else None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rasterize_points_matches_a_loop(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(3, 41, 5, generator=generator) * 14 - 7  # some outside the grid
    points[..., 1] = torch.rand(3, 41, generator=generator) * 4 - 2
    lengths = torch.tensor([41, 17, 0])
    occupancy = rasterize_points(points[..., :3], lengths, GRID)
    features = rasterize_points(points, lengths, GRID, features=True)
    assert occupancy.shape == (3, 1, 10, 3, 10) and features.shape == (3, 2, 10, 3, 10)
    expected_occ = torch.zeros(3, 1, 10, 3, 10)
    sums = torch.zeros(3, 2, 10, 3, 10)
    counts = torch.zeros(3, 10, 3, 10)
    for b in range(3):
        for p in range(int(lengths[b])):
            cell = _cell(points[b, p, :3].tolist(), GRID)
            if cell is None:
                continue
            expected_occ[(b, 0, *cell)] = 1
            sums[(b, slice(None), *cell)] += points[b, p, 3:]
            counts[(b, *cell)] += 1
    assert torch.equal(occupancy, expected_occ)
    expected = sums / counts.clamp(min=1)[:, None]
    assert torch.allclose(features, expected, atol=1e-6)
    assert float(occupancy[2].sum()) == 0  # no valid point


def _bilinear(feature: torch.Tensor, u: float, v: float) -> torch.Tensor:
    """Bilinear sample of feature [C, H, W] at pixel (u, v) with zeros outside (pixel k's
    centre at k)."""
    channels, height, width = feature.shape
    u0, v0 = math.floor(u), math.floor(v)
    out = torch.zeros(channels)
    for du in (0, 1):
        for dv in (0, 1):
            x, y = u0 + du, v0 + dv
            weight = (1 - abs(u - x)) * (1 - abs(v - y))
            if 0 <= x < width and 0 <= y < height:
                out += weight * feature[:, y, x]
    return out


def test_lift_cameras_matches_a_loop() -> None:
    torch.manual_seed(4)
    grid = Grid3D(cells=6, half_extent=6.0, height_bins=2, y_min=-1.0, y_max=1.0)
    image_size = (12, 16)
    features = torch.randn(1, 2, 3, 6, 8)  # stride 2 features of two cameras
    intrinsics = torch.tensor([[8.0, 0, 8], [0, 8.0, 6], [0, 0, 1]]).expand(1, 2, 3, 3).clone()
    cam_from_ref = torch.eye(4).expand(1, 2, 4, 4).clone()
    turn = torch.tensor([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])  # camera 1 looks along +x
    cam_from_ref[0, 1, :3, :3] = turn
    cam_from_ref[0, 1, :3, 3] = torch.tensor([0.3, 0.1, -0.2])
    lifted = lift_cameras(features, intrinsics, cam_from_ref, image_size, grid)
    centres = voxel_centres(grid)
    expected = torch.zeros(1, 3, *grid.shape)
    for index in torch.cartesian_prod(*(torch.arange(n) for n in grid.shape)).tolist():
        centre = centres[tuple(index)]
        total, seen = torch.zeros(3), 0
        for s in range(2):
            p = cam_from_ref[0, s, :3, :3] @ centre + cam_from_ref[0, s, :3, 3]
            if p[2] <= 1e-6:
                continue
            k = intrinsics[0, s] * torch.tensor([[0.5], [0.5], [1.0]])  # to the feature map
            pixel = k @ p
            u, v = float(pixel[0] / pixel[2]), float(pixel[1] / pixel[2])
            if -0.5 < u < 8 - 0.5 and -0.5 < v < 6 - 0.5:
                total += _bilinear(features[0, s], u, v)
                seen += 1
        if seen:
            expected[(0, slice(None), *index)] = total / seen
    assert torch.allclose(lifted, expected, atol=1e-5)
    assert float((lifted != 0).float().mean()) > 0.2  # the cameras do see part of the grid


def test_geometry_round_trips_and_names_a_bad_size() -> None:
    intrinsics, transforms = torch.randn(2, 6, 3, 3), torch.randn(2, 6, 4, 4)
    geometry = camera_geometry(intrinsics, transforms)
    assert geometry.shape == (2, 6, 25)
    back = split_geometry(geometry)
    assert torch.equal(back[0], intrinsics) and torch.equal(back[1], transforms)
    with pytest.raises(ValueError, match="25 values a camera"):
        split_geometry(geometry[..., :24])


def test_encoders_and_decoder_give_bev_maps() -> None:
    grid = Grid3D(cells=16, half_extent=8.0, height_bins=2, y_min=-2.0, y_max=2.0)
    camera = CameraEncoder(grid, (32, 48), dim=8)
    images = torch.randint(0, 256, (2, 6, 3, 32, 48)).to(torch.uint8)
    intrinsics = torch.tensor([[20.0, 0, 24], [0, 20.0, 16], [0, 0, 1]]).expand(2, 6, 3, 3)
    geometry = camera_geometry(intrinsics, torch.eye(4).expand(2, 6, 4, 4))
    assert camera(images, geometry).shape == (2, 8, 16, 16)
    with pytest.raises(ValueError, match="camera images must be"):
        camera(images[..., :40], geometry)
    radar = PointEncoder(grid, features=16, dim=8)
    points = torch.randn(2, 30, 19) * 4
    assert radar(points, torch.tensor([30, 5])).shape == (2, 8, 16, 16)
    assert BevDecoder(8)([torch.randn(3, 8, 16, 16)]).shape == (3, 1, 16, 16)
