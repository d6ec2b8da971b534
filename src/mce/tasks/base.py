"""The task contract."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mce.data.dataset import Batch, MultimodalData
from mce.evaluation.combinations import Evaluator
from mce.methods import METHODS, get_method
from mce.nn.model import MultimodalModel
from mce.training.config import HyperParameters


def classification_loss(outputs: Tensor, target: Tensor) -> Tensor:
    """Per-sample cross-entropy [B]."""
    return F.cross_entropy(outputs, target, reduction="none")


def classification_utility(outputs: Tensor, target: Tensor) -> Tensor:
    """Per-sample accuracy in {0, 1} [B] (the utility of Eq. 4 for classification)."""
    return (outputs.argmax(dim=-1) == target).to(torch.float32)


def inputs_transform(
    transform: Callable[[Mapping[str, Tensor], Tensor], tuple[dict[str, Tensor], Tensor]],
) -> Callable[[Batch], Batch]:
    """A :attr:`Task.augment` from a function of (inputs, target) -> (inputs, target)."""

    def augment(batch: Batch) -> Batch:
        inputs, target = transform(batch.inputs, batch.target)
        return dataclasses.replace(batch, inputs=inputs, target=target)

    return augment


@dataclass(frozen=True)
class Splits:
    """The splits a task's ``load`` returns: train and test, and an optional validation split
    (used to select the epoch with ``--select validation``).

    Attributes:
        train: the training split (missing-modality masks are applied to it by the caller).
        test: the test split every reported score is measured on.
        validation: held-out samples for epoch selection, or None.
    """

    train: MultimodalData
    test: MultimodalData
    validation: MultimodalData | None = None

    @classmethod
    def of(cls, value: Any) -> Splits:
        """Normalise what a ``load`` returned: a ``Splits``, ``(train, test)`` or
        ``(train, validation, test)``.

        Raises:
            ValueError: for anything else, or an empty split.
        """
        if isinstance(value, (tuple, list)) and len(value) == 2:
            value = cls(train=value[0], test=value[1])
        elif isinstance(value, (tuple, list)) and len(value) == 3:
            value = cls(train=value[0], validation=value[1], test=value[2])
        if isinstance(value, Splits):
            for name in ("train", "validation", "test"):
                split = getattr(value, name)
                if split is not None and len(split) == 0:
                    raise ValueError(f"the task's {name} split holds no samples")
            return value
        raise ValueError(
            "a task's load must return (train, test), (train, validation, test) or Splits, got "
            f"{type(value).__name__}"
            + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
        )


@dataclass(frozen=True)
class TrainedOn:
    """The data a run was trained on, for :attr:`Task.read_new` to read new files as the run
    read its own (e.g. standardised with the training split's statistics).

    Attributes:
        data_dir: the run's data folder, or None (a task without one).
        fold: the run's fold (a task with folds), or None.
    """

    data_dir: Path | None = None
    fold: int | None = None


NO_TARGET = -1
"""The target of every sample of new files (:meth:`Task.load_new`): none is known."""


LoadResult = (
    tuple[MultimodalData, MultimodalData]
    | tuple[MultimodalData, MultimodalData, MultimodalData]
    | Splits
)
"""What a task's ``load`` may return."""


@dataclass(frozen=True)
class Task:
    """What a data set brings: its data, its model, its loss, utility and hyper-parameters.

    A user's own data set is a ``Task`` too (see ``examples/own_data.py``): the command line
    loads it with ``--task package.module:ATTRIBUTE``.

    Attributes:
        name: task name on the command line and in reports.
        modalities: modality names; their order defines the presence bits.
        load: data_dir (None for data that needs no folder) -> (train, test) or
            (train, validation, test) splits (or a :class:`Splits`); a sample's ``present``
            bitmask says which modalities it has before masking. A task with ``folds`` is
            called ``load(data_dir, fold)`` with fold in 1..folds. Call :meth:`splits`, which
            normalises the result, rather than ``load`` itself.
        build_model: () -> a fresh MultimodalModel (seeded by the caller).
        loss: (outputs, target) -> per-sample loss, Tensor[B].
        utility: (outputs, target) -> per-sample utility in [0, 1], Tensor[B] (the v of Eq. 4).
        metric_name: what the utility measures, for reports.
        hparams: the task's hyper-parameters (its Table 1 row). Its ``missing_rates`` are
            the default: they mask the training split when it is complete (every sample has
            every modality before masking). Training data that already lacks modalities is
            trained on as it is, with no masks drawn, unless a run states its rates
            (``--missing-rates``, :func:`mce.config_for`'s ``missing_rates``); stated
            rates count the data's own absences, so each must be at least the share of samples
            the data already misses that modality in (the error names that achievable range),
            and masks then remove more on top. The run records and prints the rates it
            achieved, and their source (``results.json``: ``missing_rates``).
        needs_data_dir: whether ``--data-dir`` is required.
        metrics: extra split-level metrics reported next to the utility, name -> (outputs of
            every sample of one modality combination, concatenated; targets) -> value in
            [0, 1] (e.g. :data:`mce.evaluation.metrics.CLASSIFICATION_METRICS`: ``uar``, ``f1``).
            Evaluation keeps each combination's outputs on the CPU to compute them, which
            suits classification; dense tasks will need streaming metrics instead.
        selection_metric: what ``--select validation`` maximises, averaged over the modality
            combinations of the validation split: a key of ``metrics``, or "" for the
            utility.
        folds: number of cross-validation folds of the data set (0: none). With folds,
            ``load`` takes the fold (1..folds) as its second argument; a run without
            ``--fold`` uses fold 1.
        presets: named missing-rate settings for ``--missing-rates NAME`` (one rate per
            modality); None: the paper's a-f over three modalities.
        augment: batch -> the batch transformed (inputs, target, context), applied on the CPU
            to every training batch (the run's, and the upper-bound models' batches of one
            modality), e.g. random crops (:func:`inputs_transform` adapts a function of
            (inputs, target)); its randomness comes from torch's RNG, so runs stay seeded.
            None: none.
        inference_batch: samples per no-grad forward outside training (the upper-bound
            utilities): 512 by default, 1 for whole volumes or full-resolution camera rigs.
        evaluator: how the trained models are scored outside training: every modality
            combination, the unimodal heads, and a unimodal model on whole inputs (the upper-bound
            utilities); a :class:`~mce.evaluation.combinations.Evaluator` (the default: by
            ``utility`` and ``metrics``, batch by batch) or a subclass (dense tasks: whole volumes,
            dataset-level metrics).
        build_unimodal: (modality) -> the unimodal model [B, ...] -> outputs whose frozen copy
            gives the upper bounds U_m (factor B); None: the model's encoder and unimodal head.
        options: the task's own settings and their defaults (``--task-option NAME=VALUE``),
            e.g. a crop size; each value's type is its default's.
        configure: (**options) -> the task built with those options (all of ``options``
            given); required when ``options`` is not empty.
        runtime_options: names of ``options`` that change how the data is read, never what
            a run computes (reader threads, in-memory storage, file checks): they are left out
            of the upper-bound cache key, and ``--resume`` and an experiment's finished cells
            accept other values of them. A ``configure`` that builds a new ``Task`` sets it
            again (else every option counts: the safe side).
        method_options: registered method name -> the task's defaults for that method's
            options, an instance of its options type (e.g. ``{"redcore":
            RedCoreConfig(eta_growth_every=20_000)}``); a run starts from them and its own
            settings (command-line flags, :func:`mce.config_for` fields) override single
            fields; a method missing here starts from its options type's defaults.
        read_new: (folder, :class:`TrainedOn`) -> every sample of a folder of new files (no
            labels, no split lists), read and preprocessed as the run's training data, with
            ``ids`` naming the samples and ``present`` the modalities each has; call
            :meth:`load_new`, which checks it and sets every target to :data:`NO_TARGET`.
            None: the task cannot read new files.
        save_prediction: (folder, one sample of :meth:`load_new`'s data, its predicted map
            Tensor[...] int64, its scores Tensor[K, ...]) -> the file written under folder; for
            tasks that predict maps (segmentation), e.g. a NIfTI label map. None: none.
    """

    name: str
    modalities: tuple[str, ...]
    load: Callable[..., LoadResult]
    build_model: Callable[[], MultimodalModel]
    loss: Callable[[Tensor, Tensor], Tensor] = classification_loss
    utility: Callable[[Tensor, Tensor], Tensor] = classification_utility
    metric_name: str = "accuracy"
    hparams: HyperParameters = field(default_factory=HyperParameters)
    needs_data_dir: bool = False
    metrics: Mapping[str, Callable[[Tensor, Tensor], float]] = field(default_factory=dict)
    selection_metric: str = ""
    folds: int = 0
    presets: Mapping[str, tuple[float, ...]] | None = None
    augment: Callable[[Batch], Batch] | None = None
    inference_batch: int = 512
    evaluator: Evaluator = field(default_factory=Evaluator)
    build_unimodal: Callable[[str], torch.nn.Module] | None = None
    options: Mapping[str, int | float | str] = field(default_factory=dict)
    configure: Callable[..., Task] | None = None
    runtime_options: frozenset[str] = frozenset()
    method_options: Mapping[str, Any] = field(default_factory=dict)
    read_new: Callable[[Path, TrainedOn], MultimodalData] | None = None
    save_prediction: Callable[[Path, MultimodalData, Tensor, Tensor], Path] | None = None

    def __post_init__(self) -> None:
        for method, value in self.method_options.items():
            spec = METHODS.get(method)
            if spec is None or spec.options is None:
                known = ", ".join(name for name, s in METHODS.items() if s.options is not None)
                raise ValueError(
                    f"task {self.name!r}: method_options names {method!r}, not a registered "
                    f"method with options ({known})"
                )
            if not isinstance(value, spec.options):
                raise ValueError(
                    f"task {self.name!r}: method_options[{method!r}] must be a "
                    f"{spec.options.__name__}, got {type(value).__name__}"
                )
        if self.options and self.configure is None:
            raise ValueError(f"task {self.name!r} has options but no configure")
        unknown = sorted(set(self.runtime_options) - set(self.options))
        if unknown:
            raise ValueError(
                f"task {self.name!r}: runtime_options names {', '.join(unknown)}, not among its "
                "options"
            )
        if self.selection_metric and self.selection_metric not in self.metrics:
            raise ValueError(
                f"task {self.name!r}: selection_metric {self.selection_metric!r} is not one of "
                f'its metrics ({", ".join(self.metrics) or "none"}); "" selects on the utility'
            )
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 0:
            raise ValueError(f"task {self.name!r}: folds must be a whole number >= 0")
        for preset, rates in (self.presets or {}).items():
            if len(rates) != len(self.modalities):
                raise ValueError(
                    f"task {self.name!r}: preset {preset!r} gives {len(rates)} rates for "
                    f"{len(self.modalities)} modalities"
                )

    def with_options(self, values: Mapping[str, Any]) -> Task:
        """The task configured with ``values`` (names of :attr:`options`; a string value is
        converted to the default's type), or this task when ``values`` is empty.

        Raises:
            ValueError: an unknown option or a value of the wrong type.
        """
        if not values:
            return self
        unknown = sorted(set(values) - set(self.options))
        if unknown:
            known = ", ".join(f"{k} (default {v!r})" for k, v in self.options.items()) or "none"
            raise ValueError(
                f"task {self.name!r} has no option {', '.join(unknown)}; its options: {known}"
            )
        settings = dict(self.options)
        for name, value in values.items():
            kind = type(self.options[name])
            try:
                settings[name] = kind(value) if isinstance(value, str) else value
            except ValueError as error:
                raise ValueError(
                    f"task option {name}={value!r} must be a {kind.__name__}"
                ) from error
            if isinstance(settings[name], bool) or not isinstance(settings[name], kind):
                raise ValueError(f"task option {name}={value!r} must be a {kind.__name__}")
        assert self.configure is not None
        return self.configure(**settings)

    @property
    def identity_options(self) -> dict[str, int | float | str]:
        """The options that change what a run computes: :attr:`options` without the
        :attr:`runtime_options`."""
        return {k: v for k, v in self.options.items() if k not in self.runtime_options}

    def options_for_method(self, method: str) -> Any:
        """The task's default options of the registered ``method``: ``method_options[method]``,
        else the options type's own defaults (None for a method without options)."""
        if method in self.method_options:
            return self.method_options[method]
        options = get_method(method).options
        return None if options is None else options()

    @property
    def selection_name(self) -> str:
        """The name of what epoch selection maximises: the selection metric or the utility's
        ``metric_name``."""
        return self.selection_metric or self.metric_name

    def check_fold(self, fold: int | None) -> int | None:
        """The fold a run loads: ``fold`` checked against ``folds``, 1 when a task with folds is
        given none, None for a task without folds.

        Raises:
            ValueError: a fold outside 1..folds, or any fold for a task without folds.
        """
        if not self.folds:
            if fold is not None:
                raise ValueError(f"task {self.name!r} has no folds; it takes no fold")
            return None
        if fold is None:
            return 1
        if isinstance(fold, bool) or not isinstance(fold, int) or not 1 <= fold <= self.folds:
            raise ValueError(f"fold must be in 1..{self.folds} for task {self.name!r}, got {fold}")
        return fold

    def splits(self, data_dir: Path | None, fold: int | None = None) -> Splits:
        """Load the data: ``load(data_dir)``, or ``load(data_dir, fold)`` for a task with folds
        (fold 1 by default), as :class:`Splits`.

        Raises:
            ValueError: a bad fold (see :meth:`check_fold`) or a malformed ``load`` result.
        """
        fold = self.check_fold(fold)
        value = self.load(data_dir) if fold is None else self.load(data_dir, fold)
        return Splits.of(value)

    def load_new(self, folder: Path, trained_on: TrainedOn | None = None) -> MultimodalData:
        """Every sample of a folder of new files (:attr:`read_new`), each named by its id, with
        the target :data:`NO_TARGET`.

        ``read_new`` receives the run's fold checked (1 for a task with folds when none is
        given).

        Raises:
            ValueError: the task has no ``read_new`` (naming it), the folder does not exist, the
                fold is outside the task's folds, or what ``read_new`` raises or returns is unfit
                (no samples, no ids, other modalities).
        """
        if self.read_new is None:
            raise ValueError(
                f"task {self.name!r} cannot read new files (it defines no read_new); predict a "
                "split of its data instead"
            )
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"folder of new files {folder} does not exist")
        trained_on = trained_on or TrainedOn()
        fold = self.check_fold(trained_on.fold)  # a task with folds: fold 1 unless told
        data = self.read_new(folder, dataclasses.replace(trained_on, fold=fold))
        if not isinstance(data, MultimodalData) or tuple(data.modalities) != self.modalities:
            raise ValueError(
                f"task {self.name!r}: read_new must return MultimodalData with the modalities "
                f"{', '.join(self.modalities)}"
            )
        if len(data) == 0:
            raise ValueError(f"{folder} holds no sample of task {self.name!r}")
        if not data.ids:
            raise ValueError(f"task {self.name!r}: read_new must name every sample (ids)")
        target = torch.full((len(data),), NO_TARGET, dtype=torch.int64)
        return dataclasses.replace(data, target=target)
