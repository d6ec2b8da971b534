"""The contract every training method implements, and what the trainer hands a method.

A method sees callables and tensors only (:class:`MethodInputs`), never a task's recipe, and is
found by name through a :class:`MethodSpec` in the registry of :mod:`mce.methods`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from mce.data.dataset import Batch, MultimodalData
from mce.nn.model import MultimodalModel
from mce.support.distributed import Ranks

__all__ = [
    "LossFn",
    "UtilityFn",
    "UpperFn",
    "MethodInputs",
    "StepResult",
    "TrainingMethod",
    "StatefulMethod",
    "EpochPlan",
    "EpochMethod",
    "epoch_batches",
    "MethodSpec",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
"""(outputs, target) -> per-sample loss, Tensor[B]."""
UtilityFn = Callable[[Tensor, Tensor], Tensor]
"""(outputs, target) -> per-sample utility in [0, 1], Tensor[B]."""
UpperFn = Callable[[Batch], Tensor]
"""batch -> Tensor[B, M]: the frozen unimodal models' utility on each sample of the batch."""


@dataclass(frozen=True, eq=False)
class MethodInputs:
    """What the trainer hands a method; nothing about the task's recipe.

    Attributes:
        loss: (outputs, target) -> per-sample loss Tensor[B].
        utility: (outputs, target) -> per-sample utility in [0, 1], Tensor[B].
        counts: Tensor[M] int64 presence counts of the training split (factor A, Eq. 3).
        dataset_size: samples in the training split.
        seed: run seed (Monte Carlo plans use seed and step).
        upper: Tensor[N_train, M] utility of the frozen unimodal model of m on each training
            sample (0 where m is absent), when the method needs it (factor B, Eq. 8); or, for
            tasks whose training inputs change every step (random crops), an :data:`UpperFn`
            scoring each batch's own inputs (:class:`mce.training.pretrain.BatchUpperBounds`).
        ranks: in a data-parallel run (torchrun), this process's rank and the world size;
            the batch a method receives is then this rank's slice of the global batch, and a
            method computes its share of the global batch's loss (see
            :class:`TrainingMethod`). None: one process, whose batch is the whole batch.
        batch_size, steps: the run's batch size and number of training steps, for methods
            whose schedules scale with them (RedCore's ``schedule="released"``); 0: unknown.
        augment: the task's transform of a training batch (random crops of BraTS and
            nuScenes), for epoch passes that must see inputs as training does
            (:func:`epoch_batches`); None: none.

    Raises:
        ValueError: counts is not Tensor[M] int64, dataset_size is not a positive int, or upper
            is not Tensor[dataset_size, M] of values in [0, 1].
    """

    loss: LossFn
    utility: UtilityFn
    counts: Tensor
    dataset_size: int
    seed: int
    upper: Tensor | UpperFn | None = None
    ranks: Ranks | None = None
    batch_size: int = 0  # the run's (global) batch size; 0: not known
    steps: int = 0  # the run's training steps; 0: not known
    augment: Callable[[Batch], Batch] | None = None

    def sum_over_ranks(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over the ranks of a data-parallel run (one all-reduce; every rank
        must call it alike), ``tensor`` itself in one process: batch statistics of the global
        batch from each rank's slice (pack several into one tensor, float64 for sums)."""
        return tensor if self.ranks is None else self.ranks.sum(tensor)

    @property
    def rank(self) -> int:
        """This process's rank in a data-parallel run; 0 in one process."""
        return 0 if self.ranks is None else self.ranks.rank

    @property
    def world_size(self) -> int:
        """The number of ranks of a data-parallel run; 1 in one process."""
        return 1 if self.ranks is None else self.ranks.world_size

    def shard(self, index: Tensor) -> Tensor:
        """This rank's part of ``index`` in a data-parallel run (``torch.tensor_split`` into
        ``world_size`` parts, the first ones one longer), ``index`` itself in one process: how
        an epoch pass (:class:`EpochMethod`) divides the training split between the ranks."""
        return index if self.ranks is None else index.tensor_split(self.world_size)[self.rank]

    def __post_init__(self) -> None:
        if self.counts.dim() != 1 or self.counts.dtype != torch.int64:
            raise ValueError(
                f"counts must be Tensor[M] int64, got {self.counts.dtype} "
                f"of shape {list(self.counts.shape)}"
            )
        size = self.dataset_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"dataset_size must be a positive int, got {size!r}")
        for name in ("batch_size", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.upper is None or not isinstance(self.upper, Tensor):
            if self.upper is not None and not callable(self.upper):
                raise ValueError(
                    f"upper must be a Tensor[N_train, M] or a callable, got {type(self.upper)}"
                )
            return
        expected = (size, self.counts.shape[0])
        if tuple(self.upper.shape) != expected:
            raise ValueError(
                f"upper must have shape [N_train, M] = {list(expected)}, "
                f"got {list(self.upper.shape)}"
            )
        if not bool(((self.upper >= 0) & (self.upper <= 1)).all()):
            raise ValueError(
                "upper must hold per-sample utilities in [0, 1] (found NaN or out of range)"
            )


@dataclass
class StepResult:
    """The loss to minimise and scalar logs of one training step."""

    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)


class TrainingMethod(Protocol):
    """batch -> loss + logs. ``step`` is the global step (seeds Monte Carlo plans).

    In a data-parallel run (``inputs.ranks`` set) each rank's ``step`` sees its slice of the
    global batch and returns ``world_size x`` its share of the global batch's loss: local sums
    over global counts (:meth:`MethodInputs.sum_over_ranks`), so that the gradients, averaged
    over the ranks, are those of the global batch. The trainer logs the mean over the ranks of
    each logged value: log a loss term as ``world_size x`` its share, and a batch statistic
    computed from global sums as it is; every rank must log the same keys in the same order
    (they are averaged in one all-reduce).

    A method that keeps state across steps (e.g. RedCore's supervision weights) also
    implements :class:`StatefulMethod`, so that checkpoints carry that state.
    """

    name: str

    def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult: ...


@runtime_checkable
class StatefulMethod(Protocol):
    """A method whose state across steps the trainer saves in its checkpoints (under
    ``"method"``) and restores on resume, so that a resumed run is exact."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class EpochPlan:
    """The sample list of one epoch, given by an :class:`EpochMethod`: entry e trains sample
    ``index[e]`` of the training split with the modalities of ``present[e]`` (a subset of the
    sample's own; the others are treated as absent for that entry). An entry may repeat a
    sample (resampling). The trainer shuffles the entries with the epoch's seeded order.

    Raises:
        ValueError: the tensors are not int64 [E] of one length E >= 1, or ``index`` is out of
            range (checked against the split by :meth:`check`).
    """

    index: Tensor
    present: Tensor

    def __post_init__(self) -> None:
        for name in ("index", "present"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or value.dim() != 1 or value.dtype != torch.int64:
                raise ValueError(f"EpochPlan.{name} must be Tensor[E] int64, got {value!r}")
        if self.index.shape != self.present.shape or not self.index.numel():
            raise ValueError(
                "EpochPlan.index and .present must have one length E >= 1, got "
                f"{self.index.numel()} and {self.present.numel()}"
            )

    def __len__(self) -> int:
        return self.index.numel()

    def check(self, present: Tensor) -> None:
        """Refuse an entry outside the split (``present``: its presence masks), one that keeps
        a modality its sample lacks, or one that keeps none."""
        if int(self.index.min()) < 0 or int(self.index.max()) >= present.shape[0]:
            raise ValueError(
                f"an epoch plan names samples outside the training split of {present.shape[0]}"
            )
        own = present.cpu()[self.index.cpu()]
        if bool((self.present.cpu() & ~own).any()) or not bool((self.present > 0).all()):
            raise ValueError(
                "an epoch plan keeps a modality its sample lacks, or keeps no modality"
            )

    def state_dict(self) -> dict[str, Tensor]:
        return {"index": self.index.cpu(), "present": self.present.cpu()}


def epoch_batches(
    inputs: MethodInputs, train: MultimodalData, model: MultimodalModel, batch_size: int = 0
) -> Iterator[Batch]:
    """This rank's share of the training split (:meth:`MethodInputs.shard`), in batches of
    ``batch_size`` (0: the run's batch size, else 64) as training sees them (``inputs.augment``)
    on the model's device: what an :class:`EpochMethod`'s pass over the split iterates. Each
    batch's ``index`` gives its samples' positions in the split."""
    size = batch_size or inputs.batch_size or 64
    device = next(model.parameters()).device
    for batch in train.batches(size, inputs.shard(torch.arange(len(train)))):
        if inputs.augment is not None:
            batch = inputs.augment(batch)
        yield batch.to(device)


@runtime_checkable
class EpochMethod(Protocol):
    """A method that acts between epochs (optional part of the contract).

    Before every epoch (epoch 0 included) the trainer calls :meth:`begin_epoch` with the model in
    eval mode and gradients off. A pass over the training split there divides it between the ranks
    of a data-parallel run (:meth:`MethodInputs.shard`) and sums its statistics over them
    (:meth:`MethodInputs.sum_over_ranks`), so every rank ends with the same state. It must be a
    function of the model, the split, the epoch and the method's own state (its own random draws
    from :func:`mce.support.seeding.stream`; the trainer restores the global generators after the
    pass, so ``inputs.augment``'s draws there change nothing that follows), and a method with it is
    also a :class:`StatefulMethod`: the trainer checkpoints the state after the pass and the plan it
    returned, so a run killed at any point resumes bit-identically.

    ``begin_epoch`` returns the epoch's sample list (:class:`EpochPlan`), or None for the
    plain epoch (every sample once, all its modalities).
    """

    def begin_epoch(
        self, model: MultimodalModel, train: MultimodalData, epoch: int
    ) -> EpochPlan | None: ...


@dataclass(frozen=True)
class MethodSpec:
    """How the trainer finds, configures and builds a method by name.

    Attributes:
        name: the registry key (``--method NAME``).
        summary: one line for ``--help``.
        options: the dataclass of the method's options (e.g. ``MCEConfig``), or None. Every
            field needs a default; each becomes a command-line flag of ``python -m mce.train``
            (``--field-name``; a bool field's flag sets the opposite of its default), a
            setting of :func:`mce.config_for` and of ``python -m mce.experiment --set``,
            and part of ``config.json``. A field's metadata may give ``help``, ``flag`` (another
            flag, e.g. ``--no-a``), ``minimum``, ``choices`` (else a ``Literal`` type's values)
            and ``items`` (what a tuple field's comma-separated items are, for errors).
        build: (inputs, options instance or None) -> the method; None means default options.
        needs_upper_bounds: (options instance or None) -> whether ``inputs.upper`` is required,
            so the trainer pretrains the unimodal models only when it is.
        adapt_model: (the task's freshly built model, options instance or None) -> the model
            this method trains (e.g. RedCore's variational encoders); None: the task's model
            as built. Each method trains its own model, so an adaptation touches no other's.
    """

    name: str
    summary: str
    options: type | None
    build: Callable[[MethodInputs, Any], TrainingMethod]
    needs_upper_bounds: Callable[[Any], bool]
    adapt_model: Callable[[MultimodalModel, Any], MultimodalModel] | None = None
