"""The nuScenes network: camera, LiDAR and radar encoders to one BEV grid, light unimodal
heads, concatenation fusion and a BEV decoder."""

from __future__ import annotations

from torch import Tensor, nn

from mce.data.nuscenes import MODALITIES
from mce.nn.bev import BevDecoder, CameraEncoder, ConcatFusion2d, Grid3D, PointEncoder
from mce.nn.dense import DenseMultimodalModel
from mce.nn.model import UnimodalModel
from mce.nn.reconstruction import ReconstructionTransformer
from mce.tasks.nuscenes.data import RADAR_CHANNELS
from mce.tasks.nuscenes.options import NuScenesOptions

__all__ = ["LightHead", "bev_grid", "build_model", "build_unimodal"]


def bev_grid(options: NuScenesOptions) -> Grid3D:
    """The voxel grid of ``options``: ``cells`` a side over 100 m, ``height_bins`` over 10 m."""
    return Grid3D(
        cells=options.cells,
        half_extent=50.0,
        height_bins=options.height_bins,
        y_min=-4.0,
        y_max=6.0,
    )


class LightHead(nn.Module):
    """A unimodal head: a 1x1 conv from a modality's BEV features to the logit."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.read = nn.Conv2d(dim, 1, 1)

    def forward(self, features) -> Tensor:
        return self.read(features[-1] if isinstance(features, (tuple, list)) else features)


def _encoders(options: NuScenesOptions) -> dict[str, nn.Module]:
    grid, dim = bev_grid(options), options.dim
    return {
        "camera": CameraEncoder(grid, options.image_size, dim, options.camera_weights or None),
        "lidar": PointEncoder(grid, features=0, dim=dim),
        "radar": PointEncoder(grid, features=RADAR_CHANNELS, dim=dim),
    }


def build_model(options: NuScenesOptions) -> DenseMultimodalModel:
    """The multimodal network of ``options``."""
    dim = options.dim
    return DenseMultimodalModel(
        MODALITIES,
        encoders=_encoders(options),
        heads={name: LightHead(dim) for name in MODALITIES},
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


def build_unimodal(options: NuScenesOptions, modality: str) -> UnimodalModel:
    """The unimodal model of the upper bounds: the modality's encoder and a BEV decoder."""
    return UnimodalModel(_encoders(options)[modality], BevDecoder(options.dim))
