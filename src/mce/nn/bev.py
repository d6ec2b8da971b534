"""Bird's-eye-view pieces of the nuScenes recipe, after Simple-BEV (Harley et al., ICRA 2023).

All on the model's device, batched, with no Python loop over points or voxels:

- :func:`rasterize_points`: point clouds (padded, with lengths) to a voxel grid, occupancy or
  the mean of point features per voxel (Simple-BEV keeps the last write after a random shuffle;
  the mean is deterministic and uses every point);
- :func:`lift_cameras`: camera features to voxels by projecting every voxel centre into every
  camera and sampling bilinearly (``grid_sample``), then a mean over the cameras that see it;
- encoders for camera, LiDAR and radar that end in BEV features [B, C, Z, X], a concatenation
  fusion and a small ResNet-style BEV decoder.

Grids are (Z, Y, X) in the reference camera frame (x right, y down, z forward): cell (z, x)
covers x in [-half + x cell, ...) and z likewise; Y slices cover y in [y_min, y_max].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mce.support.grid import Grid3D

__all__ = [
    "Grid3D",
    "rasterize_points",
    "voxel_centres",
    "lift_cameras",
    "CAMERA_GEOMETRY",
    "camera_geometry",
    "split_geometry",
    "ResNetTrunk",
    "CameraEncoder",
    "PointEncoder",
    "ConcatFusion2d",
    "BevDecoder",
]


def _voxel_index(xyz: Tensor, grid: Grid3D) -> tuple[Tensor, Tensor]:
    """(flat voxel index z*Y*X + y*X + x, inside mask) of points [..., 3]."""
    size, height = grid.cell_size, grid.bin_height
    x = torch.floor((xyz[..., 0] + grid.half_extent) / size).long()
    z = torch.floor((xyz[..., 2] + grid.half_extent) / size).long()
    y = torch.floor((xyz[..., 1] - grid.y_min) / height).long()
    inside = (x >= 0) & (x < grid.cells) & (z >= 0) & (z < grid.cells)
    inside &= (y >= 0) & (y < grid.height_bins)
    index = (z * grid.height_bins + y) * grid.cells + x
    return torch.where(inside, index, torch.zeros_like(index)), inside


def rasterize_points(
    points: Tensor, lengths: Tensor, grid: Grid3D, features: bool = False
) -> Tensor:
    """Points [B, P, 3 + F] (the first ``lengths[b]`` valid) -> voxels.

    Returns:
        features False: occupancy [B, 1, Z, Y, X] in {0, 1}; True: [B, F, Z, Y, X], the mean of
        the features of the points in each voxel (0 where none).
    """
    batch, num_points = points.shape[:2]
    index, inside = _voxel_index(points[..., :3].float(), grid)
    valid = inside & (torch.arange(num_points, device=points.device)[None] < lengths[:, None])
    voxels = grid.cells * grid.height_bins * grid.cells
    flat = (index + torch.arange(batch, device=points.device)[:, None] * voxels)[valid]
    counts = torch.zeros(batch * voxels, device=points.device).index_add_(
        0, flat, torch.ones(flat.shape[0], device=points.device)
    )
    if not features:
        return (counts > 0).float().view(batch, 1, *grid.shape)
    values = points[..., 3:].float()[valid]  # (K, F)
    sums = torch.zeros(batch * voxels, values.shape[1], device=points.device).index_add_(
        0, flat, values
    )
    mean = sums / counts.clamp(min=1)[:, None]
    return mean.view(batch, *grid.shape, -1).permute(0, 4, 1, 2, 3)


def voxel_centres(grid: Grid3D, device: torch.device | str = "cpu") -> Tensor:
    """[Z, Y, X, 3] voxel centres (x, y, z) in the reference frame."""
    size, height = grid.cell_size, grid.bin_height
    x = -grid.half_extent + (torch.arange(grid.cells, device=device) + 0.5) * size
    y = grid.y_min + (torch.arange(grid.height_bins, device=device) + 0.5) * height
    zz, yy, xx = torch.meshgrid(x, y, x, indexing="ij")  # z uses the same cells as x
    return torch.stack([xx, yy, zz], dim=-1)


def lift_cameras(
    features: Tensor,
    intrinsics: Tensor,
    cam_from_ref: Tensor,
    image_size: Sequence[int],
    grid: Grid3D,
) -> Tensor:
    """Camera features [B, S, C, Hf, Wf] -> voxel features [B, C, Z, Y, X].

    Each voxel centre is moved into camera s (``cam_from_ref`` [B, S, 4, 4]), projected with the
    intrinsics [B, S, 3, 3] of the image of ``image_size`` (H, W) scaled to the feature map, and
    sampled bilinearly where it lies in front of the camera and inside the map; voxels take the
    mean over the cameras that see them (0 where none does).
    """
    batch, cameras, channels, height_f, width_f = features.shape
    height, width = image_size
    centres = voxel_centres(grid, features.device).view(-1, 3)  # (V, 3)
    homogeneous = torch.cat([centres, torch.ones_like(centres[:, :1])], 1)  # (V, 4)
    in_camera = torch.einsum("bsij,vj->bsvi", cam_from_ref.float(), homogeneous)[..., :3]
    scale = torch.tensor([width_f / width, height_f / height, 1.0], device=features.device)
    pixels = torch.einsum("bsij,bsvj->bsvi", intrinsics.float() * scale[:, None], in_camera)
    depth = pixels[..., 2]
    u = pixels[..., 0] / depth.clamp(min=1e-6)
    v = pixels[..., 1] / depth.clamp(min=1e-6)
    seen = (depth > 1e-6) & (u > -0.5) & (u < width_f - 0.5) & (v > -0.5) & (v < height_f - 0.5)
    # grid_sample with align_corners=False: pixel centre k is at (2k + 1) / size - 1
    where = torch.stack([(2 * u + 1) / width_f - 1, (2 * v + 1) / height_f - 1], dim=-1)
    sampled = F.grid_sample(
        features.reshape(batch * cameras, channels, height_f, width_f),
        where.view(batch * cameras, 1, -1, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    ).view(batch, cameras, channels, -1)
    mask = seen.to(sampled.dtype)[:, :, None]
    total = (sampled * mask).sum(1)
    count = mask.sum(1).clamp(min=1)
    return (total / count).view(batch, channels, *grid.shape)


GEOMETRY = 9 + 16  # intrinsics 3x3 and cam_from_ref 4x4 per camera
CAMERA_GEOMETRY = "camera_geometry"  # the context key of the camera calibrations


def camera_geometry(intrinsics: Tensor, cam_from_ref: Tensor) -> Tensor:
    """[B, S, 25] float32: each camera's intrinsics [B, S, 3, 3] and reference -> camera
    transform [B, S, 4, 4], flattened: the per-sample context the camera encoder reads."""
    batch, cameras = intrinsics.shape[:2]
    return torch.cat(
        [intrinsics.reshape(batch, cameras, 9), cam_from_ref.reshape(batch, cameras, 16)], dim=2
    ).float()


def split_geometry(geometry: Tensor) -> tuple[Tensor, Tensor]:
    """(intrinsics [B, S, 3, 3], cam_from_ref [B, S, 4, 4]) of :func:`camera_geometry`'s
    output.

    Raises:
        ValueError: the last axis is not 25 long.
    """
    if geometry.shape[-1] != GEOMETRY:
        raise ValueError(
            f"camera geometry must hold {GEOMETRY} values a camera (3x3 intrinsics, 4x4 "
            f"transform), got {geometry.shape[-1]}"
        )
    batch, cameras = geometry.shape[:2]
    return (
        geometry[..., :9].reshape(batch, cameras, 3, 3),
        geometry[..., 9:].reshape(batch, cameras, 4, 4),
    )


def _instance_norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True)


class _BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same parameter names); ``norm`` BatchNorm2d for the
    camera trunk (ImageNet weights), instance norm in the BEV decoder, whose rows (sample,
    modality subset) must not share batch statistics."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, norm=nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = norm(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), norm(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetTrunk(nn.Module):
    """ResNet-18's stem and layers 1-3 with torchvision's parameter names, so that its ImageNet
    weights load from a local file (``load_weights``); returns layer2 (stride 8, 128 ch) and
    layer3 (stride 16, 256 ch)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(_BasicBlock(64, 64), _BasicBlock(64, 64))
        self.layer2 = nn.Sequential(_BasicBlock(64, 128, 2), _BasicBlock(128, 128))
        self.layer3 = nn.Sequential(_BasicBlock(128, 256, 2), _BasicBlock(256, 256))

    def load_weights(self, path: str) -> None:
        """Loads the trunk's tensors from a torchvision ResNet-18 state dict saved at ``path``
        (e.g. ``resnet18-f37072fd.pth``); the classifier's are ignored.

        Raises:
            ValueError: the file is unreadable or lacks a trunk tensor.
        """
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"camera weights {path} are unreadable: {error}") from error
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(
                f"camera weights {path} are not a ResNet-18 state dict (missing {missing[:3]})"
            )
        self.load_state_dict({key: state[key] for key in own})

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        eight = self.layer2(self.layer1(x))
        return eight, self.layer3(eight)


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class CameraEncoder(nn.Module):
    """Images [B, S, 3, H, W] (0..255) and their context ``camera_geometry`` [B, S, 25] (see
    :func:`camera_geometry`) -> BEV features [B, dim, Z, X].

    A ResNet-18 trunk gives stride-8 features (layer3 upsampled and concatenated, as
    Simple-BEV), a 1x1 conv maps them to ``dim``; :func:`lift_cameras` fills the voxels and a
    3x3 conv collapses the Y slices (``dim x Y -> dim``).
    """

    context_key = CAMERA_GEOMETRY

    def __init__(
        self, grid: Grid3D, image_size: Sequence[int], dim: int = 128, weights: str | None = None
    ) -> None:
        super().__init__()
        self.grid, self.image_size = grid, tuple(image_size)
        self.trunk = ResNetTrunk()
        if weights:
            self.trunk.load_weights(weights)
        self.reduce = nn.Sequential(
            nn.Conv2d(128 + 256, dim, 3, padding=1, bias=False),
            nn.InstanceNorm2d(dim),
            nn.ReLU(),
            nn.Conv2d(dim, dim, 1),
        )
        self.compress = _bev_block(dim * grid.height_bins, dim)
        self.register_buffer(
            "mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor, context: Tensor) -> Tensor:
        intrinsics, cam_from_ref = split_geometry(context)
        batch, cameras = images.shape[:2]
        if tuple(images.shape[2:]) != (3, *self.image_size):
            raise ValueError(
                f"camera images must be [B, S, 3, {self.image_size[0]}, {self.image_size[1]}], "
                f"got {list(images.shape)}"
            )
        x = images.reshape(batch * cameras, 3, *self.image_size).float() / 255.0
        eight, sixteen = self.trunk((x - self.mean) / self.std)
        up = F.interpolate(sixteen, size=eight.shape[2:], mode="bilinear", align_corners=False)
        features = self.reduce(torch.cat([eight, up], 1))
        features = features.view(batch, cameras, *features.shape[1:])
        voxels = lift_cameras(features, intrinsics, cam_from_ref, self.image_size, self.grid)
        return self.compress(_collapse_height(voxels))


def _collapse_height(voxels: Tensor) -> Tensor:
    """[B, C, Z, Y, X] -> [B, C Y, Z, X]."""
    batch, channels, z, y, x = voxels.shape
    return voxels.permute(0, 1, 3, 2, 4).reshape(batch, channels * y, z, x)


def _bev_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.InstanceNorm2d(out_ch), nn.GELU()
    )


class PointEncoder(nn.Module):
    """Points [B, P, 3 + F] with lengths [B] -> BEV features [B, dim, Z, X]: occupancy (LiDAR,
    ``features=0``) or per-voxel mean features plus occupancy (radar), Y slices as channels,
    then a 3x3 conv block."""

    def __init__(self, grid: Grid3D, features: int = 0, dim: int = 128) -> None:
        super().__init__()
        self.grid, self.features = grid, features
        self.block = _bev_block((1 + features) * grid.height_bins, dim)

    def forward(self, points: Tensor, lengths: Tensor) -> Tensor:
        channels = [rasterize_points(points[..., :3], lengths, self.grid)]
        if self.features:
            channels.append(rasterize_points(points, lengths, self.grid, features=True))
        return self.block(_collapse_height(torch.cat(channels, 1)))


class ConcatFusion2d(nn.Module):
    """Tokens [R, M, C, Z, X] -> [R, C, Z, X]: the modalities' BEV features concatenated and
    compressed by a 3x3 conv block (Simple-BEV's compressor)."""

    def __init__(self, num_modalities: int, dim: int) -> None:
        super().__init__()
        self.block = _bev_block(num_modalities * dim, dim)

    def forward(self, tokens: Tensor) -> Tensor:
        rows, modalities, channels, z, x = tokens.shape
        return self.block(tokens.reshape(rows, modalities * channels, z, x))


class BevDecoder(nn.Module):
    """Features (a one-element sequence [B, dim, Z, X], as the dense model passes them) ->
    logits [B, 1, Z, X]: two stride-2 residual stages and upsampling adds back to full
    resolution (a smaller Simple-BEV decoder), then a 3x3 + 1x1 head."""

    def __init__(self, dim: int = 128) -> None:
        super().__init__()
        self.down1 = _BasicBlock(dim, dim, 2, norm=_instance_norm)
        self.down2 = _BasicBlock(dim, 2 * dim, 2, norm=_instance_norm)
        self.up2 = nn.Conv2d(2 * dim, dim, 1)
        self.up1 = nn.Conv2d(dim, dim, 1)
        self.head = nn.Sequential(_bev_block(dim, dim), nn.Conv2d(dim, 1, 1))

    def forward(self, features: Tensor | Sequence[Tensor]) -> Tensor:
        return self.forward_features(features)[1]

    def forward_features(self, features: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """The full-resolution decoded features [B, dim, Z, X] and the logits read from them."""
        x = features if isinstance(features, Tensor) else features[-1]
        half = self.down1(x)
        quarter = self.down2(half)
        half = half + F.interpolate(self.up2(quarter), size=half.shape[2:], mode="bilinear")
        x = x + F.interpolate(self.up1(half), size=x.shape[2:], mode="bilinear")
        return x, self.head(x)
