"""In-memory multimodal data with per-sample modality presence, and its batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


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
            keep = ((present >> m) & 1).bool().view(-1, *([1] * (self.inputs[name].dim() - 1)))
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
