"""3D U-Net pieces of the BraTS recipe, after mmFormer (Zhang et al., MICCAI 2022).

A per-modality :class:`UNetEncoder3D` (pre-activation residual conv levels and an intra-modal
Transformer at the bottleneck), the inter-modal :class:`BottleneckFusion`, the per-scale
:class:`SkipFusion` of the present modalities' skips, and the :class:`UNetDecoder3D` that turns
features at every scale into class logits (shared by the fused path and, as mmFormer's
``Decoder_sep``, by the unimodal heads).

Differences from mmFormer's code, on purpose: the bottleneck Transformer works at the encoder's
channel width (mmFormer projects 128 -> 512); its positional grid is resized to the input's token
grid, so a model trained on crops also runs on whole volumes; the inter-modal Transformer
attends over the M modality tokens of all voxels with a modality and a position embedding,
where mmFormer's ``.view`` mixes the tokens of neighbouring voxels (see ``docs``, peers).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BottleneckFusion",
    "LinearReadout3D",
    "PreNormConv3d",
    "SkipFusion",
    "UNetDecoder3D",
    "UNetEncoder3D",
    "level_channels",
]


def level_channels(base: int, levels: int) -> tuple[int, ...]:
    """Channels of each level, fine to coarse: base, 2 base, ..., 2^(levels-1) base."""
    return tuple(base << level for level in range(levels))


class PreNormConv3d(nn.Sequential):
    """InstanceNorm -> LeakyReLU(0.2) -> Conv3d, mmFormer's ``general_conv3d_prenorm``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.InstanceNorm3d(in_ch),
            nn.LeakyReLU(0.2),
            nn.Conv3d(in_ch, out_ch, kernel, stride, padding=kernel // 2),
        )


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            PreNormConv3d(channels, channels), PreNormConv3d(channels, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _transformer(width: int, heads: int, mlp_dim: int, dropout: float) -> nn.TransformerEncoder:
    """One pre-norm Transformer encoder layer with GELU, as mmFormer's (depth 1)."""
    layer = nn.TransformerEncoderLayer(
        width,
        heads,
        mlp_dim,
        dropout=dropout,
        batch_first=True,
        norm_first=True,
        activation="gelu",
    )
    return nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)


class _GridPosition(nn.Module):
    """A learned positional grid [C, g, g, g], trilinearly resized to the input's token grid."""

    def __init__(self, channels: int, grid: int) -> None:
        super().__init__()
        self.grid = nn.Parameter(torch.zeros(1, channels, grid, grid, grid))

    def forward(self, shape: Sequence[int]) -> Tensor:
        """[P, C] for a token grid of ``shape`` (d, h, w)."""
        grid = self.grid
        if tuple(grid.shape[2:]) != tuple(shape):
            grid = F.interpolate(grid, size=tuple(shape), mode="trilinear", align_corners=True)
        return grid.flatten(2)[0].transpose(0, 1)


class UNetEncoder3D(nn.Module):
    """One modality's encoder: [B, 1, D, H, W] -> features fine to coarse.

    Level 0 keeps the resolution; each next level halves it with a stride-2 conv and doubles
    the channels; every level ends with a residual pair of pre-norm convs. The coarsest level
    goes through an intra-modal Transformer over its voxels (learned positional grid).

    Args:
        base: channels of level 0. levels: number of levels (the input's sides must be
            divisible by 2^(levels-1)). grid: side of the positional grid (crop / 2^(levels-1)).
        heads, mlp_dim, dropout: of the bottleneck Transformer layer.
    """

    def __init__(
        self,
        base: int = 8,
        levels: int = 5,
        grid: int = 5,
        heads: int = 8,
        mlp_dim: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        channels = level_channels(base, levels)
        self.channels = channels
        stages: list[nn.Module] = [nn.Sequential(nn.Conv3d(1, base, 3, padding=1), _Residual(base))]
        for previous, current in itertools.pairwise(channels):
            stages.append(
                nn.Sequential(PreNormConv3d(previous, current, stride=2), _Residual(current))
            )
        self.stages = nn.ModuleList(stages)
        width = channels[-1]
        self.position = _GridPosition(width, grid)
        self.transformer = _transformer(width, heads, mlp_dim, dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        bottom = features[-1]
        batch, width, *grid = bottom.shape
        tokens = bottom.flatten(2).transpose(1, 2) + self.position(grid)
        tokens = self.transformer(tokens)
        features[-1] = tokens.transpose(1, 2).reshape(batch, width, *grid)
        return tuple(features)


class BottleneckFusion(nn.Module):
    """Inter-modal Transformer: tokens [R, M, C, d, h, w] -> fused [R, C, d, h, w].

    Every voxel's M modality tokens and all voxels attend to each other (M P tokens), with a
    learned modality embedding and the positional grid; a 1x1x1 conv maps the M C channels of a
    voxel back to C (mmFormer's ``multimodal_decode_conv``).
    """

    def __init__(
        self,
        num_modalities: int,
        channels: int,
        grid: int,
        heads: int = 8,
        mlp_dim: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.modality = nn.Parameter(torch.zeros(num_modalities, channels))
        self.position = _GridPosition(channels, grid)
        self.transformer = _transformer(channels, heads, mlp_dim, dropout)
        self.project = nn.Conv3d(num_modalities * channels, channels, 1)

    def forward(self, tokens: Tensor) -> Tensor:
        rows, modalities, channels, *grid = tokens.shape
        x = tokens.flatten(3).transpose(2, 3)  # (R, M, P, C)
        x = x + self.modality[None, :, None, :] + self.position(grid)[None, None]
        x = self.transformer(x.reshape(rows, -1, channels))
        x = x.reshape(rows, modalities, -1, channels).permute(0, 1, 3, 2)  # (R, M, C, P)
        return self.project(x.reshape(rows, modalities * channels, *grid))


class SkipFusion(nn.Module):
    """mmFormer's region-aware fusion of one scale's skips, split per modality for rows.

    mmFormer concatenates the M skips (zeros for dropped modalities) and applies pre-norm convs
    1x1 (M C -> C), 3x3, 1x1. Instance norm and LeakyReLU act per channel and keep zeros at
    zero, and the first conv is linear, so it equals the sum over kept modalities of a
    per-modality projection ``project(skips)`` (computed once per sample and modality) plus a
    bias: :meth:`forward` sums those projections over each row's subset, then applies the rest.
    """

    def __init__(self, num_modalities: int, channels: int) -> None:
        super().__init__()
        self.num_modalities = num_modalities
        self.norm = nn.InstanceNorm3d(num_modalities * channels)
        self.project_conv = nn.Conv3d(
            num_modalities * channels,
            num_modalities * channels,
            1,
            groups=num_modalities,
            bias=False,
        )
        self.bias = nn.Parameter(torch.zeros(channels, 1, 1, 1))
        self.rest = nn.Sequential(
            PreNormConv3d(channels, channels), PreNormConv3d(channels, channels, 1)
        )

    def project(self, skips: Tensor) -> Tensor:
        """[N, M, C, ...] skips (zeros where absent) -> [N, M, C, ...] per-modality projections."""
        n, m, c, *spatial = skips.shape
        x = F.leaky_relu(self.norm(skips.reshape(n, m * c, *spatial)), 0.2)
        return self.project_conv(x).reshape(n, m, c, *spatial)

    def forward(self, projected: Tensor, samples: Tensor, kept: Tensor) -> Tensor:
        """Fused skips [R, C, ...] of rows (samples [R], kept [R, M] bool)."""
        fused = None
        for m in range(self.num_modalities):
            part = projected[samples, m] * kept[:, m].to(projected.dtype).view(-1, 1, 1, 1, 1)
            fused = part if fused is None else fused + part
        return self.rest(fused + self.bias)


class UNetDecoder3D(nn.Module):
    """Features fine to coarse (channels ``level_channels(base, levels)``) -> logits [B, K, ...].

    Going up: trilinear x2 upsampling, a conv to the finer level's width, concatenation with
    that level's features, a conv back to its width; a 1x1 conv gives the K class logits.
    """

    def __init__(self, base: int, levels: int, num_classes: int) -> None:
        super().__init__()
        channels = level_channels(base, levels)
        self.reduce = nn.ModuleList(
            PreNormConv3d(coarse, fine) for fine, coarse in itertools.pairwise(channels)
        )
        self.merge = nn.ModuleList(
            nn.Sequential(PreNormConv3d(2 * fine, fine), PreNormConv3d(fine, fine, 1))
            for fine in channels[:-1]
        )
        self.head = nn.Sequential(
            nn.InstanceNorm3d(base), nn.LeakyReLU(0.2), nn.Conv3d(base, num_classes, 1)
        )

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.forward_features(features)[1]

    def forward_features(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """The finest level's decoded features [B, base, ...] and the logits read from them."""
        x = features[-1]
        for level in range(len(features) - 2, -1, -1):
            skip = features[level]
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=True)
            x = self.reduce[level](x)
            x = self.merge[level](torch.cat([x, skip], dim=1))
        return x, self.head(x)


class LinearReadout3D(nn.Module):
    """A light head: a 1x1x1 conv to K class logits at every level, upsampled to the finest
    level and summed. It reads out what the encoder's features already hold at each scale, at
    the cost of K-channel maps (a :class:`UNetDecoder3D` costs a decoder pass per modality)."""

    def __init__(self, base: int, levels: int, num_classes: int) -> None:
        super().__init__()
        self.read = nn.ModuleList(
            nn.Conv3d(c, num_classes, 1) for c in level_channels(base, levels)
        )

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        size = features[0].shape[2:]
        logits = self.read[0](features[0])
        for read, level in zip(self.read[1:], features[1:]):
            logits = logits + F.interpolate(
                read(level), size=size, mode="trilinear", align_corners=True
            )
        return logits
