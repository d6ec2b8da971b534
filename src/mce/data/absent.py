"""Which modalities a user's arrays hold: the one rule for absent modalities, stated in
:meth:`mce.data.dataset.MultimodalData.from_arrays` (a row entirely NaN or infinite is absent;
partly is an error; a stated presence wins but must point at finite rows). Everything that takes a
user's arrays (data sets, prediction) reads them by :func:`presence_from_inputs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["absent_rows", "presence_from_inputs"]


def absent_rows(value: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Bool [N]: the rows of ``value`` [N, ...] that are entirely NaN or infinite (never for
    integer or boolean inputs, which cannot be); with ``lengths`` (int64 [N] of a padded
    sequence [N, T_max, ...]), only the frames before a row's length count (the whole row for
    length 0)."""
    if not value.is_floating_point():
        return torch.zeros(value.shape[0], dtype=torch.bool)
    finite = torch.isfinite(value)
    if lengths is not None:
        finite = finite & _valid_frames(value, lengths, whole_when_empty=True)
    return ~finite.reshape(value.shape[0], -1).any(dim=1)


def _valid_frames(value: Tensor, lengths: Tensor, whole_when_empty: bool = False) -> Tensor:
    """Bool, broadcastable to ``value`` [N, T_max, ...]: the frames before each row's length
    (clamped to [0, T_max]); every frame of a row of length 0 with ``whole_when_empty``."""
    count = lengths.clamp(0, value.shape[1])
    if whole_when_empty:
        count = torch.where(count == 0, value.shape[1], count)
    frames = torch.arange(value.shape[1]) < count[:, None]
    return frames.view(*frames.shape, *([1] * (value.dim() - 2)))


def presence_from_inputs(
    inputs: Mapping[str, Tensor],
    modalities: Sequence[str],
    presence: Tensor | None = None,
    lengths: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Which modality each sample has, by the rule of this module, checked.

    Args:
        inputs: modality name -> Tensor [N, ...]; a modality of ``modalities`` missing here
            is absent from every sample.
        modalities: the modality order (column m of the result).
        presence: optional bool Tensor[N, M]: the presence stated by the caller; rows it marks
            absent are not looked at. None: a modality is present where its row is not
            entirely NaN or infinite.
        lengths: name -> int64 Tensor[N] of a padded sequence modality [N, T_max, ...]: only
            the frames before a sample's length (clamped to [0, T_max]) must be finite.

    Returns:
        Bool Tensor[N, M].

    Raises:
        ValueError: a row marked present whose input is not given or entirely non-finite; a
            present row partly NaN or infinite; a sample with no modality present. Each names
            the modality and the first sample, and counts such samples.

    Example:
        >>> x = torch.tensor([[1.0, 2.0], [float("nan")] * 2])
        >>> presence_from_inputs({"a": x, "b": torch.ones(2, 1)}, ("a", "b")).tolist()
        [[True, True], [False, True]]
    """
    num_samples = _num_samples(inputs, presence)
    matrix = torch.zeros(num_samples, len(modalities), dtype=torch.bool)
    for m, name in enumerate(modalities):
        value = inputs.get(name)
        if value is None:
            if presence is not None and bool(presence[:, m].any()):
                n = int(torch.nonzero(presence[:, m])[0, 0])
                raise ValueError(
                    f"sample {n} is marked present in modality {name!r}, whose input is not given"
                )
            continue
        sequence = lengths.get(name) if lengths is not None and value.dim() >= 2 else None
        absent = absent_rows(value, sequence)
        if presence is None:
            has = ~absent
        else:
            has = presence[:, m].bool()
            _refuse(
                has & absent,
                name,
                "is marked present but its input is entirely NaN or infinite",
                "mark it absent, or fix the input",
            )
        if value.is_floating_point():
            finite = torch.isfinite(value)
            if sequence is not None:  # padding past a length may hold anything
                finite = finite | ~_valid_frames(value, sequence)
            _refuse(
                has & ~finite.reshape(num_samples, -1).all(dim=1),
                name,
                "holds NaN or infinite values in part of its input",
                "a row is absent only when entirely NaN; fix the values or make the whole row NaN",
            )
        matrix[:, m] = has
    empty = torch.nonzero(~matrix.any(dim=1)).flatten()
    if empty.numel():
        samples = "1 such sample" if empty.numel() == 1 else f"{empty.numel()} such samples"
        raise ValueError(
            f"sample {int(empty[0])} has no modality present: each of its inputs is entirely NaN "
            f"or marked absent ({samples}); drop them first"
        )
    return matrix


def _num_samples(inputs: Mapping[str, Tensor], presence: Tensor | None) -> int:
    if presence is not None:
        return presence.shape[0]
    if not inputs:
        raise ValueError("no inputs given")
    return next(iter(inputs.values())).shape[0]


def _refuse(bad: Tensor, name: str, what: str, advice: str) -> None:
    """Raise the ValueError naming the first sample of ``bad`` (bool [N]) in modality ``name``."""
    if bool(bad.any()):
        first, count = int(torch.nonzero(bad)[0, 0]), int(bad.sum())
        samples = "1 such sample" if count == 1 else f"{count} such samples"
        raise ValueError(f"modality {name!r} of sample {first} {what} ({samples}): {advice}")
