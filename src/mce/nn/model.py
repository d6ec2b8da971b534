"""The encode -> reconstruct -> fuse -> decode model, and its forward over plan rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mce.ops import subset_gather
from mce.support.bits import presence_matrix, samples_with_modality

__all__ = [
    "MultimodalModel",
    "UnimodalModel",
    "full_rows",
    "combination_rows",
    "run_encoder",
    "decode_with_features",
]


def decode_with_features(
    decoder: nn.Module, fused: Tensor | Sequence[Tensor]
) -> tuple[Tensor, Tensor]:
    """The decoder's last features (the input of its final layer) and its outputs.

    A decoder gives them through ``forward_features(fused) -> (features, outputs)`` (the
    U-Net and BEV decoders do); an ``nn.Sequential`` decoder's features are those entering its
    last module, before the dropout layers just ahead of it.

    Raises:
        ValueError: the decoder offers neither.
    """
    if hasattr(decoder, "forward_features"):
        return decoder.forward_features(fused)
    if isinstance(decoder, nn.Sequential) and len(decoder) > 1:
        cut = len(decoder) - 1  # the features enter the last layer, before any dropout
        while cut > 1 and isinstance(decoder[cut - 1], nn.Dropout):
            cut -= 1
        features = decoder[:cut](fused)
        return features, decoder[cut:](features)
    raise ValueError(
        f"the decoder {type(decoder).__name__} exposes no features: give it a "
        "forward_features(fused) -> (features, outputs) method, or make it an nn.Sequential"
    )


def run_encoder(
    encoder: nn.Module,
    x: Tensor,
    lengths: Tensor | None = None,
    context: Mapping[str, Tensor] | None = None,
) -> Tensor | tuple[Tensor, ...]:
    """``encoder(x)``, ``encoder(x, lengths)`` for a sequence modality, plus
    ``context=context[encoder.context_key]`` for an encoder that declares a ``context_key``
    (side data such as camera calibrations; rows already those of ``x``)."""
    key = getattr(encoder, "context_key", None)
    extra = {}
    if key is not None:
        if context is None or key not in context:
            raise ValueError(f"{type(encoder).__name__} needs the samples' context {key!r}")
        extra["context"] = context[key]
    return encoder(x, **extra) if lengths is None else encoder(x, lengths, **extra)


def full_rows(present: Tensor) -> Tensor:
    """Rows (n, A_n): each sample with all of its present modalities. Tensor[N, 2]."""
    return torch.stack([torch.arange(present.shape[0], device=present.device), present], dim=1)


def combination_rows(
    present: Tensor, combinations: Sequence[int], complete: bool = False
) -> tuple[Tensor, Tensor]:
    """Rows (n, C & A_n) for every sample and modality combination C, grouped by sample.

    Returns rows [R, 2] and the combination index of each row (rows whose C & A_n is empty are
    left out; with ``complete``, every row whose A_n lacks a modality of C).
    """
    combos = torch.as_tensor(list(combinations), dtype=torch.int64, device=present.device)
    subsets = present[:, None] & combos[None, :]  # (N, C)
    samples = torch.arange(present.shape[0], device=present.device)[:, None].expand_as(subsets)
    which = torch.arange(len(combos), device=present.device)[None, :].expand_as(subsets)
    keep = subsets == combos[None, :] if complete else subsets != 0
    return torch.stack([samples[keep], subsets[keep]], dim=1), which[keep]


class MultimodalModel(nn.Module):
    """Per-modality encoders, the reconstruction module, a fusion and a decoder.

    Encoders run once per present (sample, modality); everything after them runs once over all
    rows (n, S) of a coalition plan, in one batch: ``forward_rows`` gathers each row's features
    with the modalities outside S zeroed, lets the reconstruction module rebuild every token, fuses
    and decodes. Unimodal heads (L_single, Eq. 9) read the encoder features.

    Args:
        modalities: names, in the fixed order that defines bit m of the presence masks.
        encoders: name -> module mapping a batch of that modality's input to [B, dim]; the
            encoder of a sequence modality is called as ``encoder(x, lengths)`` (see
            :meth:`encode`).
        heads: name -> unimodal head mapping [B, dim] to the task's output.
        fusion: module mapping tokens [R, M, dim] to [R, fusion.out_dim].
        decoder: module mapping fused features to the task's output.
        reconstruction: module (tokens [R, M, dim], kept [R, M]) -> [R, M, dim], or None.
        dim: feature size of every encoder.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        encoders: Mapping[str, nn.Module],
        heads: Mapping[str, nn.Module],
        fusion: nn.Module,
        decoder: nn.Module,
        reconstruction: nn.Module | None,
        dim: int,
    ) -> None:
        super().__init__()
        if set(encoders) != set(modalities) or set(heads) != set(modalities):
            raise ValueError(f"encoders and heads must be given for exactly {list(modalities)}")
        self.modalities = tuple(modalities)
        self.encoders = nn.ModuleDict({name: encoders[name] for name in self.modalities})
        self.heads = nn.ModuleDict({name: heads[name] for name in self.modalities})
        self.fusion = fusion
        self.decoder = decoder
        self.reconstruction = reconstruction
        self.dim = dim

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def encode(
        self,
        inputs: Mapping[str, Tensor],
        present: Tensor,
        lengths: Mapping[str, Tensor] | None = None,
        context: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Features h [N, M, dim], computed only where a modality is present (zeros elsewhere).

        Args:
            inputs: name -> Tensor[N, ...], the inputs of every modality.
            present: Tensor[N] int64 presence bitmasks.
            lengths: name -> Tensor[N] int64 valid frames of a sequence modality padded as
                [N, T, ...] (e.g. ``batch.lengths``); its encoder is called as
                ``encoder(x[index], lengths[name][index])``, the others as ``encoder(x[index])``.
            context: the samples' side data (``batch.context``), for encoders with a
                ``context_key`` (see :func:`run_encoder`).
        """
        lengths = lengths or {}
        num_samples = present.shape[0]
        device = present.device
        # under autocast the features keep its dtype, so that subset_gather runs its half kernel
        autocast = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if autocast else None
        columns = []
        for m, name in enumerate(self.modalities):
            index = samples_with_modality(present, m)
            column = torch.zeros(num_samples, self.dim, device=device, dtype=dtype)
            if index.numel():
                part = lengths[name].to(index.device)[index] if name in lengths else None
                rows = {key: value[index] for key, value in (context or {}).items()}
                features = run_encoder(self.encoders[name], inputs[name][index], part, rows)
                column = column.index_copy(0, index, features)
            columns.append(column)
        return torch.stack(columns, dim=1)

    def row_modules(self) -> list[nn.Module | None]:
        """The modules :meth:`forward_rows` runs (reconstruction, fusion, decoder)."""
        return [self.reconstruction, self.fusion, self.decoder]

    def feature_tokens(self, h: Tensor) -> Tensor:
        """Tensor[N, M, F]: the encoder features the reconstruction module rebuilds, i.e. the
        targets of L_aux (Eq. 13); here ``h`` itself."""
        return h

    def row_tokens(self, h: Tensor, rows: Tensor) -> Tensor:
        """Tokens [R, M, dim] of rows (n, S): the features of S, the others zero, after the
        reconstruction module."""
        tokens = subset_gather(h.contiguous(), rows)
        if self.reconstruction is not None:
            kept = presence_matrix(rows[:, 1], self.num_modalities)
            tokens = self.reconstruction(tokens, kept)
        return tokens

    def forward_rows(self, h: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Tokens [R, M, dim] after reconstruction and outputs [R, ...] for rows (n, S)."""
        tokens = self.row_tokens(h, rows)
        return tokens, self.decoder(self.fusion(tokens))

    def forward_rows_features(self, h: Tensor, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """As :meth:`forward_rows`, with the decoder's last features of each row between the
        tokens and the outputs (:func:`decode_with_features`): [R, F] for a vector decoder,
        [R, C, *grid] for a dense one. Methods that distil or compare representations of rows
        (PASSION's prototypes) read them."""
        tokens = self.row_tokens(h, rows)
        features, outputs = decode_with_features(self.decoder, self.fusion(tokens))
        return tokens, features, outputs

    def forward(
        self,
        inputs: Mapping[str, Tensor],
        present: Tensor,
        lengths: Mapping[str, Tensor] | None = None,
        context: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Prediction of each sample from all of its present modalities (``lengths``,
        ``context``: as in :meth:`encode`)."""
        h = self.encode(inputs, present, lengths, context)
        return self.forward_rows(h, full_rows(present))[1]

    def unimodal_outputs(self, h: Tensor, present: Tensor) -> dict[int, tuple[Tensor, Tensor]]:
        """m -> (indices of samples with m present, head outputs on them)."""
        outputs = {}
        for m, name in enumerate(self.modalities):
            index = samples_with_modality(present, m)
            if index.numel():
                outputs[m] = (index, self.heads[name](h[index, m]))
        return outputs


class UnimodalModel(nn.Module):
    """One modality's encoder followed by its unimodal head.

    Args:
        encoder: maps a batch of the modality's input (and, for a sequence modality, its
            lengths) to features [B, dim].
        head: maps the features to the task's output.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        context: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """x: the modality's input [B, ...]; lengths: Tensor[B] int64 valid frames of a padded
        sequence modality (None for the others); context: the samples' side data, for an
        encoder with a ``context_key`` -> the head's output."""
        return self.head(run_encoder(self.encoder, x, lengths, context))


def run_unimodal(
    model: nn.Module,
    x: Tensor,
    lengths: Tensor | None = None,
    context: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """A unimodal model's outputs: :class:`UnimodalModel` takes the context mapping;
    any other module is called as an encoder would be (:func:`run_encoder`)."""
    if isinstance(model, UnimodalModel):
        return model(x, lengths, context)
    return run_encoder(model, x, lengths, context)
