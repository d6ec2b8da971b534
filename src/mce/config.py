"""Typed hyper-parameters and the run configuration.

:class:`HyperParameters` is the one block of training hyper-parameters. Every field has a
default here, a task's recipe overrides what differs (as code: ``HyperParameters(epochs=280,
...)``), and the command line overrides any field (``--epochs``, ``--lr-step``, ...).
:class:`TrainConfig` adds what a run needs besides (task, method, seed, device, folders) and is
what ``config.json`` records, with every value resolved.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mce.data.masks import PRESETS
from mce.methods.mce import MCEConfig
from mce.methods.redcore import RedCoreConfig

if TYPE_CHECKING:
    from mce.tasks.base import Task

__all__ = ["HyperParameters", "TrainConfig", "OPTIMIZERS", "SELECT_MODES"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SELECT_MODES = ("last", "validation")  # TrainConfig.select


def _field(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field whose ``help`` documents it on the command line too."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class HyperParameters:
    """Training hyper-parameters (Table 1 of the paper for each task's values)."""

    epochs: int = _field(30, "passes over the training split", minimum=1)
    batch_size: int = _field(128, "samples per training step", minimum=1)
    optimizer: Literal["adam", "adamw", "sgd"] = _field("adam", "optimizer", choices=OPTIMIZERS)
    lr: float = _field(1e-3, "learning rate", positive=True)
    weight_decay: float = _field(0.0, "weight decay of the optimizer", minimum=0)
    momentum: float = _field(0.9, "momentum (sgd only)", minimum=0)
    lr_step: int = _field(
        0, "StepLR: multiply the lr by lr_gamma every lr_step epochs (0: constant lr)", minimum=0
    )
    lr_gamma: float = _field(0.1, "StepLR decay factor", positive=True)
    lr_schedule: Literal["step", "poly", "onecycle"] = _field(
        "step",
        "lr schedule: step (StepLR per epoch, lr_step and lr_gamma), poly (per epoch, lr (1 - "
        "epoch / epochs)^lr_power, as mmFormer) or onecycle (per step, lr the peak, as "
        "Simple-BEV)",
        choices=("step", "poly", "onecycle"),
    )
    lr_power: float = _field(0.9, "exponent of the poly schedule", positive=True)
    grad_clip: float = _field(1.0, "clip the gradient norm to this (0: no clipping)", minimum=0)
    pretrain_steps: int = _field(
        1000,
        "optimizer-step budget of each frozen unimodal upper-bound model (factor B)",
        minimum=1,
    )
    pretrain_eval_every: int = _field(
        20, "steps between held-out evaluations of an upper-bound model", minimum=1
    )
    pretrain_patience: int = _field(
        5, "held-out evaluations without improvement before an upper-bound model stops", minimum=1
    )
    pretrain_holdout: float = _field(
        0.2,
        "fraction of a modality's training samples held out to stop its upper-bound model early",
        positive=True,
        below=1,
    )
    missing_rates: tuple[float, ...] = _field(
        (), "missing rate of each modality in the training split, in the task's modality order"
    )

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = _checked(spec, getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)

    def rates_for(self, modalities: tuple[str, ...]) -> tuple[float, ...]:
        """One missing rate per modality (all 0 when none were set)."""
        if not self.missing_rates:
            return (0.0,) * len(modalities)
        if len(self.missing_rates) != len(modalities):
            raise ValueError(
                f"{len(self.missing_rates)} missing rates given for {len(modalities)} "
                f"modalities ({', '.join(modalities)})"
            )
        return self.missing_rates


def _checked(spec: dataclasses.Field, value: Any) -> Any:
    """``value`` as the field's type, or a ValueError naming the field."""
    name, meta = spec.name, spec.metadata
    if name == "missing_rates":
        return _rates(value)
    kind = type(spec.default)
    if kind is str:
        if value not in meta["choices"]:
            raise ValueError(f"{name} must be one of {', '.join(meta['choices'])}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    value = kind(value) if math.isfinite(value) else value
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if "minimum" in meta and not value >= meta["minimum"]:
        raise ValueError(f"{name} must be at least {meta['minimum']}, got {value}")
    if meta.get("positive") and not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")
    if "below" in meta and not value < meta["below"]:
        raise ValueError(f"{name} must be below {meta['below']}, got {value}")
    return value


def _rates(value: Any) -> tuple[float, ...]:
    """Missing rates from a sequence of numbers, a comma-separated string or a preset a-f."""
    if isinstance(value, str):
        if value in PRESETS:
            return PRESETS[value]
        value = value.split(",") if value else ()
    try:
        rates = tuple(float(rate) for rate in value)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"missing_rates must be numbers in [0, 1), comma-separated or a sequence, or a "
            f"preset ({', '.join(PRESETS)}); got {value!r}"
        ) from error
    for rate in rates:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"missing rate {rate} is outside [0, 1)")
    return rates


def hparam_arguments(
    describe: Callable[[str], str] = lambda name: "", exclude: Collection[str] = ()
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(flag, ``argparse.add_argument`` keywords) of every :class:`HyperParameters` field: one
    command-line option each, defaulting to None (the task's value); ``describe(name)`` is
    appended to the field's help."""
    for spec in dataclasses.fields(HyperParameters):
        if spec.name in exclude:
            continue
        kind = {int: int, float: float}.get(type(spec.default), str)
        options = {
            "type": kind,
            "default": None,
            "help": f"{spec.metadata['help']} ({describe(spec.name)})",
        }
        if "choices" in spec.metadata:
            options["choices"] = spec.metadata["choices"]
        yield f"--{spec.name.replace('_', '-')}", options


HPARAM_NAMES = tuple(spec.name for spec in dataclasses.fields(HyperParameters))
MCE_NAMES = tuple(spec.name for spec in dataclasses.fields(MCEConfig))
REDCORE_NAMES = tuple(spec.name for spec in dataclasses.fields(RedCoreConfig))
METHOD_OPTION_FIELDS = ("mce", "redcore")  # TrainConfig fields holding a method's options


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; ``config.json`` in the run folder records it resolved.

    ``hparams`` left as None become the task's own; :meth:`for_task` overrides single fields.
    """

    task: str = "digits"  # task name, or package.module:ATTRIBUTE of a user's Task
    hparams: HyperParameters | None = None  # None: the task's hyper-parameters
    # a registered method (mce, baseline, redcore), or compare: mce + baseline
    method: str = "compare"
    mce: MCEConfig = MCEConfig()  # MCE switches and weights
    # RedCore's weights and schedule; None: the task's (Task.method_options["redcore"]), or
    # RedCoreConfig()'s defaults
    redcore: RedCoreConfig | None = None
    data_dir: str | None = None  # data folder of tasks that read files
    seed: int = 0  # masks, initialisation, data order, Monte Carlo plans
    drop_all_missing: bool = False  # independent masks, all-missing samples dropped (not exact)
    # training masks read from this CSV (sample id + a 0/1 column per modality) instead of drawn
    presence_csv: str | None = None
    device: str = "cpu"  # cpu, cuda or cuda:N
    out: str | None = None  # run folder; None: runs/<task>-<method>-<date>-<time>
    cache_dir: str | None = None  # unimodal models; None: $XDG_CACHE_HOME/mce (~/.cache/mce)
    no_cache: bool = False  # retrain the unimodal models even when cached
    progress: bool = True  # progress bars
    # CPU threads of torch's kernels (torch.set_num_threads); None: torch's own choice
    threads: int | None = None
    # activation budget of one chunk of plan rows in a dense model (DenseMultimodalModel);
    # None: the task's default. Changes memory and time; in training also where dropout draws
    # its masks, so a resumed run keeps it
    row_memory_gb: float | None = None
    # which epoch's model is tested: "last" (the paper's behaviour) or "validation": the epoch
    # with the best validation score (the task's selection_metric averaged over the modality
    # combinations, as MMIN); needs a task with a validation split
    select: Literal["last", "validation"] = "last"
    fold: int | None = None  # cross-validation fold 1..task.folds; None: fold 1 of such a task
    # the task's own options (Task.options), e.g. {"crop": 32} for brats; unset ones keep
    # their defaults
    task_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.select not in SELECT_MODES:
            raise ValueError(
                f"select must be one of {', '.join(SELECT_MODES)}, got {self.select!r}"
            )
        if self.fold is not None and (
            isinstance(self.fold, bool) or not isinstance(self.fold, int) or self.fold < 1
        ):
            raise ValueError(f"fold must be a whole number >= 1 or None, got {self.fold!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ValueError(f"threads must be a whole number >= 1 or None, got {self.threads!r}")
        budget = self.row_memory_gb
        if budget is not None and (
            isinstance(budget, bool)
            or not isinstance(budget, (int, float))
            or not 0 < budget < float("inf")
        ):
            raise ValueError(f"row_memory_gb must be a positive number or None, got {budget!r}")
        if self.hparams is None or self.redcore is None:
            from mce.tasks import get_task

            recipe = get_task(self.task, self.task_options)
            if self.hparams is None:
                object.__setattr__(self, "hparams", recipe.hparams)
            if self.redcore is None:
                object.__setattr__(self, "redcore", recipe.options_for_method("redcore"))

    @classmethod
    def for_task(cls, task: str | Task = "digits", **settings: Any) -> TrainConfig:
        """The task's hyper-parameters with ``settings`` applied.

        ``settings`` may name any field of :class:`HyperParameters` (``epochs=2``), of
        :class:`MCEConfig` (``mc_k=10``), of :class:`RedCoreConfig` (``kl_weight=0.001``, applied
        to the task's RedCore defaults) or of this class (``method="mce"``); anything else is a
        ``ValueError`` listing the valid names.
        """
        from mce.tasks import get_task

        options = settings.get("task_options") or {}
        recipe = get_task(task, options) if isinstance(task, str) else task.with_options(options)
        hparams = {k: settings.pop(k) for k in list(settings) if k in HPARAM_NAMES}
        mce = {k: settings.pop(k) for k in list(settings) if k in MCE_NAMES}
        base = settings.pop("mce", MCEConfig())
        redcore = {k: settings.pop(k) for k in list(settings) if k in REDCORE_NAMES}
        redcore_base = settings.pop("redcore", None) or recipe.options_for_method("redcore")
        own = {spec.name for spec in dataclasses.fields(cls)}
        own -= {"task", "hparams", *METHOD_OPTION_FIELDS}
        unknown = sorted(set(settings) - own)
        if unknown:
            valid = ", ".join(sorted(own | set(HPARAM_NAMES) | set(MCE_NAMES) | set(REDCORE_NAMES)))
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; valid: {valid}")
        settings["fold"] = recipe.check_fold(settings.get("fold"))  # 1 for a task with folds
        return cls(
            task=task if isinstance(task, str) else recipe.name,
            hparams=dataclasses.replace(recipe.hparams, **hparams),
            mce=dataclasses.replace(base, **mce),
            redcore=dataclasses.replace(redcore_base, **redcore),
            **settings,
        )

    def options_for(self, options_type: type | None) -> Any:
        """The field of this config holding a method's options (found by type: ``mce`` for
        :class:`MCEConfig`, ``redcore`` for :class:`RedCoreConfig`), or the options type's
        defaults when no field holds one."""
        if options_type is None:
            return None
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, options_type):
                return value
        return options_type()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, every value resolved (``progress``, ``no_cache`` and ``threads`` are left
        out: they change nothing, a cached unimodal model being the one retraining would give,
        bar the order of floating-point sums across threads)."""
        values = dataclasses.asdict(self)
        values.pop("progress")
        values.pop("no_cache")
        values.pop("threads")
        values["hparams"]["missing_rates"] = list(self.hparams.missing_rates)
        return values
