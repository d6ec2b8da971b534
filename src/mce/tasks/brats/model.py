"""The BraTS network: a 3D U-Net encoder per sequence, an mmFormer fusion, a U-Net decoder and
the unimodal heads; the 3D U-Net of the upper bounds."""

from __future__ import annotations

from mce.data.brats import MODALITIES
from mce.nn.dense import DenseMultimodalModel
from mce.nn.model import UnimodalModel
from mce.nn.reconstruction import ReconstructionTransformer
from mce.nn.unet3d import (
    BottleneckFusion,
    LinearReadout3D,
    SkipFusion,
    UNetDecoder3D,
    UNetEncoder3D,
    level_channels,
)
from mce.tasks.brats.options import BratsOptions

__all__ = ["NUM_CLASSES", "ROW_MEMORY_GB", "build_model", "build_unimodal"]

NUM_CLASSES = 4  # background, NCR/NET, edema, enhancing tumour
ROW_MEMORY_GB = 8.0  # activations of one chunk of rows (--row-memory-gb)
_DEFAULT = BratsOptions()


def _heads(width: int) -> int:
    return next(h for h in (8, 4, 2, 1) if width % h == 0)


def _encoder(crop: int, base: int, levels: int) -> UNetEncoder3D:
    width = base << (levels - 1)
    return UNetEncoder3D(base, levels, crop >> (levels - 1), heads=_heads(width), mlp_dim=4 * width)


def build_model(
    crop: int = _DEFAULT.crop,
    base: int = _DEFAULT.base,
    levels: int = _DEFAULT.levels,
    head: str = _DEFAULT.head,
) -> DenseMultimodalModel:
    """The 3D U-Net + mmFormer network for ``crop``^3 inputs (see :mod:`mce.tasks.brats`);
    ``head``: the unimodal heads, a :class:`LinearReadout3D` per modality ("light") or one
    shared :class:`UNetDecoder3D` ("decoder", mmFormer's ``Decoder_sep``)."""
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


def build_unimodal(
    crop: int = _DEFAULT.crop, base: int = _DEFAULT.base, levels: int = _DEFAULT.levels
) -> UnimodalModel:
    """The unimodal model of the upper bounds: the modality's encoder and a full U-Net decoder
    (a 3D U-Net on one sequence)."""
    return UnimodalModel(_encoder(crop, base, levels), UNetDecoder3D(base, levels, NUM_CLASSES))
