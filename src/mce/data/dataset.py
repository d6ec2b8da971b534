"""In-memory multimodal data with per-sample modality presence, and its batches."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mce.bits import has_modality


@dataclass(frozen=True)
class Batch:
    """One batch. ``inputs[name]`` holds every sample's input (zeros where absent);
    ``present`` the presence bitmasks; ``index`` the samples' positions in their split."""

    inputs: dict[str, Tensor]
    target: Tensor
    present: Tensor
    index: Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            {k: v.to(device) for k, v in self.inputs.items()},
            self.target.to(device),
            self.present.to(device),
            self.index.to(device),
        )


@dataclass(frozen=True)
class MultimodalData:
    """A split held in memory: one tensor per modality (first dim N), targets and presence."""

    modalities: tuple[str, ...]
    inputs: dict[str, Tensor]
    target: Tensor
    present: Tensor

    def __post_init__(self) -> None:
        n = self.target.shape[0]
        if set(self.inputs) != set(self.modalities):
            raise ValueError(f"inputs hold {sorted(self.inputs)}, expected {list(self.modalities)}")
        for name, tensor in self.inputs.items():
            if tensor.shape[0] != n:
                raise ValueError(
                    f"modality {name!r} has {tensor.shape[0]} samples, targets have {n}"
                )
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"modality {name!r} holds NaN or infinite values")
        if self.present.shape != (n,):
            raise ValueError(f"present must have shape [{n}], got {list(self.present.shape)}")

    @classmethod
    def from_arrays(
        cls,
        inputs: Mapping[str, Any],
        target: Any,
        presence: Any | None = None,
    ) -> MultimodalData:
        """A data set from NumPy arrays or tensors, e.g. your own features.

        Args:
            inputs: modality name -> array [N, ...]; the order of the mapping fixes the
                modality order (bit m of the presence masks). Floating arrays become float32.
            target: array [N] of class indices (or [N, ...] targets of another task).
            presence: bool/0-1 array [N, M]: which modalities each sample has (default: all).
                Inputs of absent modalities are replaced by zeros, so they may hold NaN.

        Raises:
            ValueError: naming the modality and sample of a NaN or infinite present input, a
                sample with no modality, or arrays of mismatched lengths.

        Example:
            >>> data = MultimodalData.from_arrays(
            ...     {"image": np.zeros((4, 8)), "audio": np.ones((4, 3))},
            ...     np.array([0, 1, 0, 1]),
            ...     presence=np.array([[1, 1], [1, 0], [0, 1], [1, 1]]),
            ... )
            >>> data.present.tolist()
            [3, 1, 2, 3]
        """
        from mce import bits

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
        if presence is None:
            matrix = torch.ones(num_samples, len(modalities), dtype=torch.bool)
        else:
            matrix = torch.as_tensor(np.asarray(presence))
            if tuple(matrix.shape) != (num_samples, len(modalities)):
                raise ValueError(
                    f"presence must have shape [N, M] = [{num_samples}, {len(modalities)}], "
                    f"got {list(matrix.shape)}"
                )
        if not bool(((matrix == 0) | (matrix == 1)).all()):
            raise ValueError("presence must hold only booleans or 0/1")
        matrix = matrix.bool()
        present = bits.present_masks(matrix)
        empty = torch.nonzero(present == 0).flatten()
        if empty.numel():
            raise ValueError(
                f"sample {int(empty[0])} has no modality present ({empty.numel()} such samples); "
                "drop them first"
            )
        for m, name in enumerate(modalities):
            tensor, has = tensors[name], matrix[:, m]
            if tensor.is_floating_point():
                bad = has & ~torch.isfinite(tensor.reshape(num_samples, -1)).all(dim=1)
                if bool(bad.any()):
                    first = int(torch.nonzero(bad)[0, 0])
                    raise ValueError(
                        f"modality {name!r} of sample {first} holds NaN or infinite values but "
                        "is marked present (mark it absent in presence, or fix the input)"
                    )
                tensors[name] = torch.nan_to_num(tensor, nan=0.0, posinf=0.0, neginf=0.0)
        return cls(modalities, tensors, target, present).with_presence(present)

    def __len__(self) -> int:
        return self.target.shape[0]

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def subset(self, index: Tensor) -> MultimodalData:
        return MultimodalData(
            self.modalities,
            {k: v[index] for k, v in self.inputs.items()},
            self.target[index],
            self.present[index],
        )

    def random_split(self, fraction: float, seed: int) -> tuple[MultimodalData, MultimodalData]:
        """A seeded random split: the first ``fraction`` of a permutation, then the rest."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        cut = int(len(self) * fraction)
        return self.subset(order[:cut]), self.subset(order[cut:])

    def with_presence(self, present: Tensor) -> MultimodalData:
        """The same samples with new presence masks; absent inputs are zeroed."""
        inputs = {}
        for m, name in enumerate(self.modalities):
            keep = has_modality(present, m).view(-1, *([1] * (self.inputs[name].dim() - 1)))
            inputs[name] = torch.where(
                keep, self.inputs[name], torch.zeros((), dtype=self.inputs[name].dtype)
            )
        return MultimodalData(self.modalities, inputs, self.target, present)

    def batch(self, index: Tensor) -> Batch:
        return Batch(
            {k: v[index] for k, v in self.inputs.items()},
            self.target[index],
            self.present[index],
            index,
        )

    def batches(
        self, batch_size: int, order: Sequence[int] | Tensor | None = None, start: int = 0
    ) -> Iterator[Batch]:
        """Batches in ``order`` (default: as stored), from batch number ``start``."""
        order = torch.arange(len(self)) if order is None else torch.as_tensor(order)
        for first in range(start * batch_size, len(self), batch_size):
            yield self.batch(order[first : first + batch_size])


def standardize(
    train: MultimodalData, test: MultimodalData, modality: str, dims: tuple[int, ...]
) -> tuple[MultimodalData, MultimodalData]:
    """Standardise one modality of both splits with the training split's statistics only.

    Mean and standard deviation are taken over ``dims`` of the training inputs (e.g. ``(0,)``:
    per feature over samples), so no test statistic leaks into the preprocessing.
    """
    values = train.inputs[modality]
    mean = values.mean(dim=dims, keepdim=True)
    std = values.std(dim=dims, keepdim=True) + 1e-6

    def apply(split: MultimodalData) -> MultimodalData:
        inputs = dict(split.inputs, **{modality: (split.inputs[modality] - mean) / std})
        return MultimodalData(split.modalities, inputs, split.target, split.present)

    return apply(train), apply(test)
