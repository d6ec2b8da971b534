"""The multimodal model for dense outputs (segmentation): multi-scale features per modality.

Each present (sample, modality) is encoded once into feature maps at several scales
(:class:`MultiScaleFeatures`). A row (n, S) of a coalition plan then sees:

- the **bottleneck** of every modality through :func:`mce.ops.subset_gather` (zeros outside S),
  rebuilt voxel by voxel by the reconstruction Transformer (Eq. 15: at each bottleneck voxel
  the M modality tokens form one sequence) and fused by the inter-modal Transformer. L_aux
  (Eq. 13) compares the rebuilt bottleneck tokens of the dropped modalities with their
  encoder features.
- the **skips** of the modalities in S only; the skips of dropped modalities are zeroed, not
  reconstructed, as mmFormer does for missing sequences. Rebuilding them would mean a decoder
  per scale and full-resolution targets (4 x 8 x 80^3 floats a sample at the finest scale) for
  features the decoder reads only through a masked sum; the bottleneck carries what is missing.

Everything after the encoders runs once over a plan's rows. When the rows of a step would
exceed ``row_memory_gb`` of activations (estimated per row from the decoder's widths), they run
in chunks; with gradients each chunk is checkpointed (its activations are recomputed in the
backward pass, with the same dropout masks), so any method's loss is computed over all rows as
before and one ``backward`` still serves it. In eval mode chunking changes nothing but rounding;
in training, dropout draws its masks chunk by chunk, so the budget is part of a run's settings
(a resumed run must use the same). The chunking is logged once per (rows, chunk) size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mce.nn.model import MultimodalModel, decode_with_features, run_encoder
from mce.nn.unet3d import BottleneckFusion, SkipFusion, UNetDecoder3D
from mce.ops import subset_gather
from mce.support.bits import presence_matrix, samples_with_modality

__all__ = ["MultiScaleFeatures", "DenseMultimodalModel", "ROW_ACTIVATION_FACTOR"]

log = logging.getLogger("mce.train")

ROW_ACTIVATION_FACTOR = 32
"""Floats kept per channel-voxel of a row's levels (norms, activations and conv outputs of the
up path, the fused skips, the logits, the loss): the per-row memory estimate is
``factor x 4 bytes x sum over levels of channels x voxels``. Calibrated on the BraTS model at
32^3 (base 8, 4 levels): 42 MB a row saved for backward (15 rows against 1), 45 MB estimated."""


class MultiScaleFeatures(NamedTuple):
    """Encoder features of a batch, zeros where a modality is absent.

    Attributes:
        skips: per level, fine to coarse, Tensor[N, M, C_l, *spatial_l] (all but the bottleneck).
        bottleneck: Tensor[N, M, C, d, h, w].
    """

    skips: tuple[Tensor, ...]
    bottleneck: Tensor

    def detach(self) -> MultiScaleFeatures:
        return MultiScaleFeatures(tuple(s.detach() for s in self.skips), self.bottleneck.detach())


class DenseMultimodalModel(MultimodalModel):
    """Per-modality encoders returning features fine to coarse, the reconstruction Transformer
    on the bottleneck, mmFormer's fusions, a U-Net decoder, and unimodal heads.

    Args:
        modalities: names; their order defines the presence bits.
        encoders: name -> module mapping [B, 1, D, H, W] to a tuple of features fine to coarse
            (channels ``channels``).
        heads: name -> module mapping one modality's feature tuple to logits (L_single, Eq. 9);
            the same module may serve every modality (mmFormer's shared ``Decoder_sep``).
        fusion: :class:`BottleneckFusion`.
        skip_fusions: one :class:`SkipFusion` per level but the bottleneck, fine to coarse.
        decoder: :class:`UNetDecoder3D` over the fused features.
        reconstruction: module (tokens [B, M, C], kept [B, M]) -> [B, M, C], or None.
        channels: channels of each level, fine to coarse.
        row_memory_gb: the activation budget of one chunk of rows (see the module doc).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        encoders: Mapping[str, nn.Module],
        heads: Mapping[str, nn.Module],
        fusion: BottleneckFusion,
        skip_fusions: Sequence[SkipFusion],
        decoder: UNetDecoder3D,
        reconstruction: nn.Module | None,
        channels: Sequence[int],
        row_memory_gb: float = 8.0,
    ) -> None:
        super().__init__(modalities, encoders, heads, fusion, decoder, reconstruction, channels[-1])
        if len(skip_fusions) != len(channels) - 1:
            raise ValueError(f"{len(channels) - 1} skip fusions expected, got {len(skip_fusions)}")
        self.skip_fusions = nn.ModuleList(skip_fusions)
        self.channels = tuple(channels)
        self.row_memory_gb = row_memory_gb
        self._logged: set[tuple[int, int]] = set()

    def encode(
        self,
        inputs: Mapping[str, Tensor],
        present: Tensor,
        lengths: Mapping[str, Tensor] | None = None,
        context: Mapping[str, Tensor] | None = None,
    ) -> MultiScaleFeatures:
        """Features of every level, computed only where a modality is present (inputs
        Tensor[N, ...] per modality; the encoder of a modality with ``lengths``, e.g. a padded
        point cloud, is called as ``encoder(x, lengths)``). An encoder may return one tensor
        (a single level) or a tuple of levels, fine to coarse."""
        lengths = lengths or {}
        num_samples = present.shape[0]
        levels: list[list[Tensor]] | None = None
        for m, name in enumerate(self.modalities):
            index = samples_with_modality(present, m)
            if not index.numel():
                continue
            part = lengths[name].to(index.device)[index] if name in lengths else None
            rows = {key: value[index] for key, value in (context or {}).items()}
            features = run_encoder(self.encoders[name], inputs[name][index].float(), part, rows)
            if isinstance(features, Tensor):
                features = (features,)
            if levels is None:
                levels = [[] for _ in features]
            for level, value in enumerate(features):
                levels[level].append((m, index, value))  # type: ignore[arg-type]
        if levels is None:
            raise ValueError("every sample of the batch misses every modality")
        stacked = []
        for entries in levels:
            _, _, first = entries[0]  # type: ignore[misc]
            shape = (num_samples, self.num_modalities, *first.shape[1:])
            column = first.new_zeros(shape)
            for m, index, value in entries:  # type: ignore[misc]
                column = column.index_put((index, torch.full_like(index, m)), value)
            stacked.append(column)
        return MultiScaleFeatures(tuple(stacked[:-1]), stacked[-1])

    def row_modules(self) -> list[nn.Module | None]:
        """The modules :meth:`forward_rows` runs (skip fusions too)."""
        return [*super().row_modules(), self.skip_fusions]

    def feature_tokens(self, h: MultiScaleFeatures) -> Tensor:
        """Tensor[N, M, C d h w]: the bottleneck features the reconstruction rebuilds (L_aux)."""
        return h.bottleneck.flatten(2)

    def row_bytes(self, h: MultiScaleFeatures) -> int:
        """Estimated activation bytes of one row through the fusions and the decoder."""
        levels = [*h.skips, h.bottleneck]
        size = sum(level[0, 0].numel() for level in levels)
        return ROW_ACTIVATION_FACTOR * 4 * size

    def rows_per_chunk(self, h: MultiScaleFeatures, num_rows: int) -> int:
        budget = self.row_memory_gb * 2**30
        return max(1, min(num_rows, math.floor(budget / self.row_bytes(h))))

    def forward_rows(self, h: MultiScaleFeatures, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Rebuilt bottleneck tokens [R, M, C d h w] and logits [R, K, D, H, W] of rows (n, S)."""
        return self._forward_chunks(h, rows, False)

    def forward_rows_features(
        self, h: MultiScaleFeatures, rows: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """As :meth:`forward_rows`, with the decoder's finest features [R, C_0, *spatial]
        (the input of its 1x1 class head) between the tokens and the logits."""
        return self._forward_chunks(h, rows, True)

    def _forward_chunks(
        self, h: MultiScaleFeatures, rows: Tensor, features: bool
    ) -> tuple[Tensor, ...]:
        """Tokens, (decoder features,) logits of ``rows``, in chunks within the memory budget."""
        num_rows = rows.shape[0]
        # each skip's per-(sample, modality) projection once, shared by every row and chunk
        projected = [fusion.project(skip) for fusion, skip in zip(self.skip_fusions, h.skips)]
        chunk = self.rows_per_chunk(h, num_rows)
        if chunk >= num_rows:
            return self._rows(features, rows, h.bottleneck, *projected)
        grad = torch.is_grad_enabled()
        key = (num_rows, chunk)
        if key not in self._logged:
            self._logged.add(key)
            log.info(
                "%d rows run in chunks of %d (about %.0f MB of activations a row, budget "
                "--row-memory-gb %g)%s",
                num_rows,
                chunk,
                self.row_bytes(h) / 2**20,
                self.row_memory_gb,
                "; each chunk is recomputed in the backward pass" if grad else "",
            )
        parts = []
        for first in range(0, num_rows, chunk):
            part = rows[first : first + chunk]
            if grad:
                parts.append(
                    checkpoint(
                        self._rows, features, part, h.bottleneck, *projected, use_reentrant=False
                    )
                )
            else:
                parts.append(self._rows(features, part, h.bottleneck, *projected))
        return tuple(torch.cat(pieces) for pieces in zip(*parts))

    def _rows(
        self, features: bool, rows: Tensor, bottleneck: Tensor, *projected: Tensor
    ) -> tuple[Tensor, ...]:
        """Tokens, (decoder features,) and logits of ``rows`` from the bottleneck and the
        projected skips."""
        num_rows, modalities = rows.shape[0], self.num_modalities
        channels, grid = bottleneck.shape[2], bottleneck.shape[3:]
        kept = presence_matrix(rows[:, 1], modalities)
        tokens = subset_gather(bottleneck.flatten(2).contiguous(), rows)  # (R, M, C P)
        if self.reconstruction is not None:
            per_voxel = tokens.view(num_rows, modalities, channels, -1).permute(0, 3, 1, 2)
            voxels = per_voxel.shape[1]
            rebuilt = self.reconstruction(
                per_voxel.reshape(num_rows * voxels, modalities, channels),
                kept.repeat_interleave(voxels, dim=0),
            )
            tokens = (
                rebuilt.view(num_rows, voxels, modalities, channels)
                .permute(0, 2, 3, 1)
                .reshape(num_rows, modalities, -1)
            )
        fused = [self.fusion(tokens.view(num_rows, modalities, channels, *grid))]
        samples = rows[:, 0]
        for fusion, skip in zip(self.skip_fusions, projected):
            fused.insert(-1, fusion(skip, samples, kept))
        if features:
            return tokens, *decode_with_features(self.decoder, fused)
        return tokens, self.decoder(fused)

    def unimodal_outputs(
        self, h: MultiScaleFeatures, present: Tensor
    ) -> dict[int, tuple[Tensor, Tensor]]:
        """m -> (indices of samples with m present, head logits on them)."""
        outputs = {}
        for m, name in enumerate(self.modalities):
            index = samples_with_modality(present, m)
            if index.numel():
                features = [level[index, m] for level in (*h.skips, h.bottleneck)]
                outputs[m] = (index, self.heads[name](features))
        return outputs
