"""Multimodal data with per-sample modality presence, and its batches: held in memory, or
with modalities read from storage batch by batch (:class:`~mce.data.lazy.LazyRows`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mce.data.absent import presence_from_inputs
from mce.data.lazy import LazyRows, read_ahead, take_rows
from mce.support.bits import has_modality

PREFETCH = 4  # batches of a lazy split read ahead, each on its own thread

@dataclass(frozen=True)
class Batch:
    """One batch. ``inputs[name]`` holds every sample's input (zeros where absent);
    ``present`` the presence bitmasks; ``index`` the samples' positions in their split;
    ``lengths[name]`` (sequence modalities only) int64 [B], the valid frames of each sample's
    padded sequence ``inputs[name]`` [B, T, ...] (0 where the modality is absent); ``context``
    the samples' side data (see :class:`MultimodalData`)."""

    inputs: dict[str, Tensor]
    target: Tensor
    present: Tensor
    index: Tensor
    lengths: dict[str, Tensor] = field(default_factory=dict)
    context: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            {k: v.to(device) for k, v in self.inputs.items()},
            self.target.to(device),
            self.present.to(device),
            self.index.to(device),
            {k: v.to(device) for k, v in self.lengths.items()},
            {k: v.to(device) for k, v in self.context.items()},
        )


@dataclass(frozen=True)
class MultimodalData:
    """A split: one tensor per modality (first dim N), targets and presence.

    A modality may instead be a :class:`~mce.data.lazy.LazyRows` (its samples read from
    storage when a batch needs them, for splits too large for memory; a ragged one, such as
    point clouds, brings its lengths with each batch). Subsets and masks of it are views;
    :meth:`batches` reads the next batches on background threads.

    A sequence modality (variable-length frames, e.g. IEMOCAP's acoustic features) is stored
    padded as [N, T_max, F] with ``lengths[name]``, int64 [N]: the number of valid leading
    frames of each sample, in [1, T_max] where the modality is present and in [0, T_max] where
    it is absent (:meth:`with_presence` and :meth:`from_arrays` set it to 0 there). Frames past
    a sample's length need not be zero: encoders given the lengths ignore them.
    """

    modalities: tuple[str, ...]
    inputs: dict[str, Tensor | LazyRows]
    target: Tensor
    present: Tensor
    lengths: dict[str, Tensor] = field(default_factory=dict)
    ids: tuple[str, ...] = ()  # the samples' names in their data set (e.g. nuScenes tokens)
    # per-sample side data that masks never remove (e.g. camera calibrations): key -> Tensor[N,
    # ...]; an encoder whose ``context_key`` names one receives it (see MultimodalModel.encode)
    context: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.target.shape[0]
        for key, tensor in self.context.items():
            if tensor.shape[0] != n:
                raise ValueError(f"context {key!r} has {tensor.shape[0]} samples, targets have {n}")
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"context {key!r} holds NaN or infinite values")
        if self.ids and (len(self.ids) != n or len(set(self.ids)) != n):
            raise ValueError(f"ids must name each of the {n} samples once")
        if set(self.inputs) != set(self.modalities):
            raise ValueError(f"inputs hold {sorted(self.inputs)}, expected {list(self.modalities)}")
        for name, tensor in self.inputs.items():
            if tensor.shape[0] != n:
                raise ValueError(
                    f"modality {name!r} has {tensor.shape[0]} samples, targets have {n}"
                )
            if isinstance(tensor, LazyRows):
                if name in self.lengths:
                    raise ValueError(f"modality {name!r} is read lazily: its lengths come with it")
                continue  # its reader checks each sample as it reads it
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"modality {name!r} holds NaN or infinite values")
        if self.present.shape != (n,):
            raise ValueError(f"present must have shape [{n}], got {list(self.present.shape)}")
        for name, lengths in self.lengths.items():
            _check_lengths(name, lengths, self, n)

    @classmethod
    def from_arrays(
        cls,
        inputs: Mapping[str, Any],
        target: Any,
        presence: Any | None = None,
        lengths: Mapping[str, Any] | None = None,
    ) -> MultimodalData:
        """A data set from NumPy arrays or tensors, e.g. your own features.

        Absent modalities, the one rule for a user's arrays
        (:func:`mce.data.absent.presence_from_inputs` applies it): a sample's row of a
        modality that is entirely NaN (or infinite) means the sample lacks that modality.
        With ``presence`` given, the rows it marks absent are ignored and a row it marks
        present must be finite. A row only partly NaN or infinite is an error (it is neither
        absent nor valid), and so is a sample with no modality. Absent inputs are stored as
        zeros.

        Args:
            inputs: modality name -> array [N, ...]; the order of the mapping fixes the
                modality order (bit m of the presence masks). Floating arrays become float32.
            target: array [N] of class indices (or [N, ...] targets of another task).
            presence: bool/0-1 array [N, M]: which modalities each sample has (default: those
                whose rows are not entirely NaN).
            lengths: for sequence modalities stored padded as [N, T_max, F]: name -> integer
                array [N] of valid frames per sample (1..T_max where present; absent samples'
                values are ignored and set to 0). Frames past a length are set to zero and may
                hold NaN; a sequence row is absent when the whole padded row is NaN.

        Raises:
            ValueError: naming the modality and sample of an input partly NaN or infinite (in
                its valid frames) or marked present but entirely NaN; a sample with no
                modality; arrays of mismatched lengths; bad sequence lengths (unknown
                modality, shape, integer type, range).

        Example:
            >>> data = MultimodalData.from_arrays(
            ...     {"image": np.zeros((4, 8)), "audio": np.ones((4, 3))},
            ...     np.array([0, 1, 0, 1]),
            ...     presence=np.array([[1, 1], [1, 0], [0, 1], [1, 1]]),
            ... )
            >>> data.present.tolist()
            [3, 1, 2, 3]
            >>> audio = np.array([[1.0, 2.0, 3.0], [np.nan] * 3])  # sample 1 lacks audio
            >>> inputs = {"image": np.zeros((2, 8)), "audio": audio}
            >>> MultimodalData.from_arrays(inputs, [0, 1]).present.tolist()
            [3, 1]
        """
        from mce.support import bits

        modalities = tuple(inputs)
        tensors = {}
        for name, array in inputs.items():
            tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, Tensor) else array)
            tensors[name] = tensor.float() if tensor.is_floating_point() else tensor
        target = torch.as_tensor(np.asarray(target) if not isinstance(target, Tensor) else target)
        if not target.is_floating_point():
            target = target.long()
        num_samples = target.shape[0]
        for name, tensor in tensors.items():
            if tensor.dim() == 0 or tensor.shape[0] != num_samples:
                raise ValueError(
                    f"modality {name!r} has shape {list(tensor.shape)}; expected {num_samples} "
                    "samples (the length of target) in its first dimension"
                )
        stated = None
        if presence is not None:
            stated = torch.as_tensor(np.asarray(presence))
            if tuple(stated.shape) != (num_samples, len(modalities)):
                raise ValueError(
                    f"presence must have shape [N, M] = [{num_samples}, {len(modalities)}], "
                    f"got {list(stated.shape)}"
                )
            if not bool(((stated == 0) | (stated == 1)).all()):
                raise ValueError("presence must hold only booleans or 0/1")
            stated = stated.bool()
        length_tensors = {
            name: _given_lengths(name, array, tensors, num_samples)
            for name, array in (lengths or {}).items()
        }
        matrix = presence_from_inputs(tensors, modalities, stated, length_tensors)
        present = bits.present_masks(matrix)
        for name, value in length_tensors.items():
            tensor = tensors[name]
            # absent samples: any value given, stored as 0
            absent = ~matrix[:, modalities.index(name)]
            value = torch.where(absent, torch.zeros((), dtype=torch.int64), value)
            valid = _valid_frames(value.clamp(0, tensor.shape[1]), tensor.shape[1])
            valid = valid.view(*valid.shape, *([1] * (tensor.dim() - 2)))
            tensors[name] = torch.where(valid, tensor, torch.zeros((), dtype=tensor.dtype))
            length_tensors[name] = value
        for name, tensor in tensors.items():
            if tensor.is_floating_point():  # absent rows (zeroed by with_presence) and padding
                tensors[name] = torch.nan_to_num(tensor, nan=0.0, posinf=0.0, neginf=0.0)
        return cls(modalities, tensors, target, present, length_tensors).with_presence(present)

    def __len__(self) -> int:
        return self.target.shape[0]

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def subset(self, index: Tensor) -> MultimodalData:
        return MultimodalData(
            self.modalities,
            {k: take_rows(v, index) for k, v in self.inputs.items()},
            self.target[index],
            self.present[index],
            {k: v[index] for k, v in self.lengths.items()},
            _select(self.ids, index),
            {k: v[index] for k, v in self.context.items()},
        )

    def random_split(self, fraction: float, seed: int) -> tuple[MultimodalData, MultimodalData]:
        """A seeded random split: the first ``fraction`` of a permutation, then the rest."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        cut = int(len(self) * fraction)
        return self.subset(order[:cut]), self.subset(order[cut:])

    def with_presence(self, present: Tensor) -> MultimodalData:
        """The same samples with new presence masks; absent inputs are zeroed, and so are the
        lengths of absent sequence modalities (a modality cannot be made present again then:
        its frames are gone, and its length 0 is refused)."""
        inputs, lengths = {}, {}
        for m, name in enumerate(self.modalities):
            has = has_modality(present, m)
            if isinstance(self.inputs[name], LazyRows):
                inputs[name] = self.inputs[name].masked(has)
                continue
            keep = has.view(-1, *([1] * (self.inputs[name].dim() - 1)))
            inputs[name] = torch.where(
                keep, self.inputs[name], torch.zeros((), dtype=self.inputs[name].dtype)
            )
            if name in self.lengths:
                lengths[name] = torch.where(has, self.lengths[name], torch.zeros_like(has).long())
        return MultimodalData(
            self.modalities, inputs, self.target, present, lengths, self.ids, self.context
        )

    @property
    def lazy(self) -> bool:
        """Whether a modality is read from storage batch by batch (:class:`LazyRows`)."""
        return any(isinstance(v, LazyRows) for v in self.inputs.values())

    def batch(self, index: Tensor, present: Tensor | None = None) -> Batch:
        """The samples at ``index``; sequence modalities are cut to the batch's longest length
        (``[:, :max_len]``, at least 1 frame), so a batch is padded to its own maximum. Lazy
        modalities are read here. ``present`` (Tensor[B] int64, optional): keep only these
        modalities of each sample (a subset of its own); the others are absent in the batch
        (inputs zeroed, lengths 0), as an epoch plan's entries ask."""
        if present is not None:
            return self._restricted(self.batch(index), present)
        inputs, lengths = {}, {k: v[index] for k, v in self.lengths.items()}
        for name, value in self.inputs.items():
            if isinstance(value, LazyRows):
                inputs[name], read_lengths = value.load(index)
                if read_lengths is not None:
                    lengths[name] = read_lengths
            else:
                inputs[name] = value[index]
        for name in self.lengths:
            longest = max(int(lengths[name].max()) if lengths[name].numel() else 0, 1)
            inputs[name] = inputs[name][:, :longest]
        context = {k: v[index] for k, v in self.context.items()}
        return Batch(inputs, self.target[index], self.present[index], index, lengths, context)

    def _restricted(self, batch: Batch, present: Tensor) -> Batch:
        """``batch`` with each sample's modalities cut to ``present``."""
        present = present.to(batch.present.device) & batch.present
        inputs, lengths = dict(batch.inputs), dict(batch.lengths)
        for m, name in enumerate(self.modalities):
            has = has_modality(present, m)
            if bool(has.all()):
                continue
            value = inputs[name]
            keep = has.view(-1, *([1] * (value.dim() - 1))).to(value.device)
            inputs[name] = torch.where(keep, value, torch.zeros((), dtype=value.dtype))
            if name in lengths:
                lengths[name] = torch.where(has, lengths[name], torch.zeros_like(lengths[name]))
        return Batch(inputs, batch.target, present, batch.index, lengths, batch.context)

    def batches(
        self,
        batch_size: int,
        order: Sequence[int] | Tensor | None = None,
        start: int = 0,
        part: tuple[int, int] | None = None,
        present: Tensor | None = None,
    ) -> Iterator[Batch]:
        """Batches in ``order`` (default: as stored), from batch number ``start``. With lazy
        modalities the next ``PREFETCH`` batches are read on background threads while this one
        is used.

        ``part=(rank, world_size)`` yields slice ``rank`` of each batch cut into
        ``world_size`` disjoint slices by ``torch.tensor_split`` (the first ``len % world_size``
        slices one sample longer): the slices of all ranks together are the batch.

        ``present`` (Tensor[len(order)] int64, aligned with ``order``; optional): the
        modalities each entry keeps (see :meth:`batch`). ``order`` may then repeat samples
        and be longer than the split (an epoch plan's entries).
        """
        order = torch.arange(len(self)) if order is None else torch.as_tensor(order)
        starts = range(start * batch_size, order.numel(), batch_size)
        indices = [order[first : first + batch_size] for first in starts]
        keeps = None
        if present is not None:
            keeps = [present[first : first + batch_size] for first in starts]
        if part is not None:
            indices = [index.tensor_split(part[1])[part[0]] for index in indices]
            if keeps is not None:
                keeps = [keep.tensor_split(part[1])[part[0]] for keep in keeps]
        if keeps is not None:
            pairs = list(zip(indices, keeps))
            yield from read_ahead(lambda pair: self.batch(*pair), pairs, PREFETCH * self.lazy)
            return
        if not self.lazy:
            for index in indices:
                yield self.batch(index)
            return
        yield from read_ahead(self.batch, indices, PREFETCH)


def _select(ids: tuple[str, ...], index: Tensor) -> tuple[str, ...]:
    """The ids at ``index`` (positions or a boolean mask), as tensor indexing picks rows."""
    if not ids:
        return ()
    picked = torch.arange(len(ids))[torch.as_tensor(index)].flatten().tolist()
    return tuple(ids[i] for i in picked)


def _given_lengths(
    name: str, array: Any, tensors: Mapping[str, Tensor], num_samples: int
) -> Tensor:
    """The lengths given for sequence modality ``name`` as int64 [N], checked against its
    padded inputs (type, shape; the range is checked once presence is known)."""
    if name not in tensors:
        raise ValueError(f"lengths given for {name!r}, which is not among {tuple(tensors)}")
    value = torch.as_tensor(np.asarray(array) if not isinstance(array, Tensor) else array)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"lengths of modality {name!r} must be integers, got {value.dtype}")
    tensor = tensors[name]
    if tensor.dim() < 2:
        raise ValueError(
            f"modality {name!r} has shape {list(tensor.shape)}; a sequence modality with "
            "lengths must be padded as [N, T_max, ...]"
        )
    if tuple(value.shape) != (num_samples,):
        raise ValueError(
            f"lengths of modality {name!r} must have shape [{num_samples}], "
            f"got {list(value.shape)}"
        )
    return value.long()


def _valid_frames(lengths: Tensor, num_frames: int) -> Tensor:
    """Bool [N, T]: frame t of sample n is valid (t < lengths[n])."""
    return torch.arange(num_frames, device=lengths.device) < lengths[:, None]


def _check_lengths(name: str, lengths: Tensor, data: MultimodalData, num_samples: int) -> None:
    """Raise a ValueError naming ``name`` unless its lengths fit the padded sequences."""
    if name not in data.inputs:
        raise ValueError(f"lengths given for {name!r}, which is not among {list(data.modalities)}")
    if not isinstance(lengths, Tensor) or lengths.dtype != torch.int64:
        kind = lengths.dtype if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"lengths of modality {name!r} must be an int64 tensor, got {kind}")
    if tuple(lengths.shape) != (num_samples,):
        raise ValueError(
            f"lengths of modality {name!r} must have shape [{num_samples}], "
            f"got {list(lengths.shape)}"
        )
    tensor = data.inputs[name]
    if tensor.dim() < 2:
        raise ValueError(
            f"modality {name!r} has shape {list(tensor.shape)}; a sequence modality with lengths "
            "must be padded as [N, T_max, ...]"
        )
    num_frames = tensor.shape[1]
    has = has_modality(data.present, data.modalities.index(name)).to(lengths.device)
    low = has.long()  # at least one frame where present, 0 allowed where absent
    bad = (lengths < low) | (lengths > num_frames)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0, 0])
        state = "present" if bool(has[first]) else "absent"
        raise ValueError(
            f"modality {name!r}: sample {first} ({state}) has length {int(lengths[first])}, "
            f"outside [{int(low[first])}, {num_frames}] (T_max = {num_frames}); "
            f"{int(bad.sum())} such samples"
        )


def standardize(
    train: MultimodalData, test: MultimodalData, modality: str, dims: tuple[int, ...]
) -> tuple[MultimodalData, MultimodalData]:
    """Standardise one modality of both splits with the training split's statistics only.

    Mean and standard deviation are taken over ``dims`` of the training inputs (e.g. ``(0,)``:
    per feature over samples), so no test statistic leaks into the preprocessing.

    For a sequence modality (one with ``lengths``) the statistics are taken over the valid
    frames only (padding and absent samples, of length 0, do not count), and only valid frames
    are standardised: padded frames come out zero.
    """
    values = train.inputs[modality]
    if modality in train.lengths:
        weight = _frame_weights(train, modality)
        count = weight.sum(dim=dims, keepdim=True)
        mean = (values * weight).sum(dim=dims, keepdim=True) / count.clamp(min=1)
        var = ((values - mean) ** 2 * weight).sum(dim=dims, keepdim=True) / (count - 1).clamp(min=1)
        std = var.sqrt() + 1e-6
    else:
        mean = values.mean(dim=dims, keepdim=True)
        std = values.std(dim=dims, keepdim=True) + 1e-6

    def apply(split: MultimodalData) -> MultimodalData:
        scaled = (split.inputs[modality] - mean) / std
        if modality in split.lengths:
            scaled = torch.where(_frame_weights(split, modality).bool(), scaled, 0.0)
        scaled[~has_modality(split.present, split.modalities.index(modality))] = 0.0  # absent
        inputs = dict(split.inputs, **{modality: scaled})
        return MultimodalData(
            split.modalities,
            inputs,
            split.target,
            split.present,
            split.lengths,
            split.ids,
            split.context,
        )

    return apply(train), apply(test)


def _frame_weights(data: MultimodalData, modality: str) -> Tensor:
    """1.0 on the valid frames of a sequence modality, 0.0 elsewhere; broadcastable to it."""
    values = data.inputs[modality]
    valid = _valid_frames(data.lengths[modality], values.shape[1])
    return valid.view(*valid.shape, *([1] * (values.dim() - 2))).to(values.dtype)
