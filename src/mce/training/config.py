"""Typed hyper-parameters and the run configuration.

:class:`HyperParameters` is the one block of training hyper-parameters. Every field has a
default here, a task's recipe overrides what differs (as code: ``HyperParameters(epochs=280,
...)``), and the command line overrides any field (``--epochs``, ``--lr-step``, ...).
:class:`TrainConfig` adds what a run needs besides (task, method and each method's options,
seed, device, folders) and is what ``config.json`` records, with every value resolved. It is
plain data: the run fills in the task's values for what it leaves unset.

:func:`option_arguments` turns any options dataclass (the hyper-parameters, a method's options)
into command-line flags; :func:`parse_option` reads one field's value from text.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mce.data.masks import PRESETS

__all__ = [
    "HyperParameters",
    "TrainConfig",
    "OPTIMIZERS",
    "SELECT_MODES",
    "PRECISIONS",
    "UPPER_BOUND_MODES",
    "HPARAM_NAMES",
    "parse_rates",
    "option_names",
    "option_arguments",
    "hparam_arguments",
    "parse_option",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
SELECT_MODES = ("last", "validation")  # TrainConfig.select
PRECISIONS = ("32", "bf16", "fp16")  # TrainConfig.precision
UPPER_BOUND_MODES = ("available", "complete")  # TrainConfig.upper_bounds
SCORE_ON = ("available", "complete")  # TrainConfig.score_on
MASK_SCHEMES = ("exact", "quota")  # TrainConfig.mask_scheme


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
        (),
        "missing rate of each modality in the training split, in the task's modality order, "
        "counting the data's own absences (unset: the task's rates on complete data, none on "
        "data that already lacks modalities)",
        as_text=True,  # a preset name is the task's (Task.presets): the driver resolves it
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
        return parse_rates(value)
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


def parse_rates(
    value: Any, presets: Mapping[str, Sequence[float]] | None = None
) -> tuple[float, ...]:
    """Missing rates from a sequence of numbers, comma-separated text or a preset name of
    ``presets`` (default :data:`mce.data.masks.PRESETS`, the paper's a-f over three modalities;
    a task's own: ``Task.presets``); each rate in [0, 1).

    Raises:
        ValueError: not numbers nor a preset, or a rate outside [0, 1).
    """
    presets = PRESETS if presets is None else presets
    if isinstance(value, str):
        if value in presets:
            return tuple(presets[value])
        value = value.split(",") if value else ()
    try:
        rates = tuple(float(rate) for rate in value)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"missing_rates must be numbers in [0, 1), comma-separated or a sequence, or a "
            f"preset ({', '.join(presets)}); got {value!r}"
        ) from error
    for rate in rates:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"missing rate {rate} is outside [0, 1)")
    return rates


def option_names(options: type) -> tuple[str, ...]:
    """The field names of an options dataclass (``HyperParameters``, a method's options)."""
    return tuple(spec.name for spec in dataclasses.fields(options))


def parse_option(options: type, name: str, text: str) -> Any:
    """The value of field ``name`` of the dataclass ``options`` written as ``text``: a number,
    a choice, true/false, or comma-separated items of a tuple field (``256,128,64``).

    Raises:
        ValueError: ``text`` is not a value of the field's type, naming what is expected.
    """
    spec = {field.name: field for field in dataclasses.fields(options)}[name]
    default = spec.default
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} takes true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(default, tuple):
        item = _item_type(options, name)
        try:
            return tuple(item(part) for part in text.split(",")) if text else ()
        except ValueError:
            example = ",".join(str(part) for part in default) or "1,2"
            noun = spec.metadata.get("items", "comma-separated values")
            raise ValueError(f"expected {noun} like {example}, got {text!r}") from None
    if isinstance(default, (int, float)):
        kind = type(default)
        try:
            return kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise ValueError(f"{name} must be {noun}, got {text!r}") from None
    return text


def option_arguments(
    options: type,
    describe: Callable[[str], str] = lambda name: "",
    exclude: Collection[str] = (),
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(flag, ``argparse.add_argument`` keywords) of every field of the dataclass ``options``:
    one command-line option each, stored under the field's name, None when not given.

    The flag is ``--name-with-dashes``; a bool field's flag sets it to the opposite of its
    default (``--no-name`` for a field that defaults to True). A field's metadata may give
    ``help``, ``flag`` (another flag, e.g. ``--no-a``), ``choices`` (else a ``Literal``
    type's values), ``items`` (what a tuple field's items are, for errors), ``as_text`` (the
    value is kept as text for the caller to resolve) and ``minimum`` (checked by the command
    line). ``describe(name)``, when not empty, is appended to the help in parentheses.
    """
    hints = _type_hints(options)
    for spec in dataclasses.fields(options):
        if spec.name in exclude:
            continue
        meta = spec.metadata
        text = meta.get("help", spec.name.replace("_", " "))
        description = describe(spec.name)
        keywords: dict[str, Any] = {
            "dest": spec.name,
            "default": None,
            "help": f"{text} ({description})" if description else text,
        }
        dashed = spec.name.replace("_", "-")
        if isinstance(spec.default, bool):
            flag = meta.get("flag", f"--no-{dashed}" if spec.default else f"--{dashed}")
            keywords.update(action="store_const", const=not spec.default)
            yield flag, keywords
            continue
        if not meta.get("as_text"):
            keywords["type"] = _argument_type(options, spec.name)
        choices = meta.get("choices") or _literal_values(hints.get(spec.name))
        if choices:
            keywords["choices"] = tuple(choices)
        yield meta.get("flag", f"--{dashed}"), keywords


def hparam_arguments(
    describe: Callable[[str], str] = lambda name: "", exclude: Collection[str] = ()
) -> Iterator[tuple[str, dict[str, Any]]]:
    """:func:`option_arguments` of :class:`HyperParameters` (None when not given: the task's
    value); ``--missing-rates`` stays text, resolved with the task's presets."""
    yield from option_arguments(HyperParameters, describe, exclude)


def _argument_type(options: type, name: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse_option(options, name, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def _item_type(options: type, name: str) -> type:
    """The item type of a ``tuple[X, ...]`` field (str when not said)."""
    args = typing.get_args(_type_hints(options).get(name))
    return args[0] if args and isinstance(args[0], type) else str


def _type_hints(options: type) -> dict[str, Any]:
    """The field types of ``options`` resolved (none where an annotation cannot be)."""
    try:
        return typing.get_type_hints(options)
    except (NameError, TypeError):
        return {}


def _literal_values(hint: Any) -> tuple[Any, ...]:
    """The values of a ``Literal[...]`` type (or of a ``Literal`` in a union), else ()."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    for arg in typing.get_args(hint):
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return ()


HPARAM_NAMES = option_names(HyperParameters)


def _check_mask_sources(scheme: str, drop_all_missing: bool, presence_csv: str | None) -> None:
    """Refuse the settings that ask for the training masks in two ways at once."""
    if presence_csv and (scheme != "exact" or drop_all_missing):
        other = "drop_all_missing=True" if drop_all_missing else f"mask_scheme={scheme!r}"
        raise ValueError(
            f"presence_csv={presence_csv!r} gives the training masks, so nothing is drawn: "
            f"{other} cannot apply; use one or the other"
        )
    if scheme == "quota" and drop_all_missing:
        raise ValueError(
            "mask_scheme='quota' never leaves a sample with no modality, so drop_all_missing=True "
            "has nothing to drop; use one or the other"
        )


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; ``config.json`` in the run folder records it resolved.

    Plain data: what is left unset (``hparams`` None, a method missing from
    ``method_options``) the run takes from the task (:func:`mce.training.run.resolve_config`);
    :func:`mce.config_for` builds one from a task and single settings.
    """

    task: str = "digits"  # task name, or package.module:ATTRIBUTE of a user's Task
    hparams: HyperParameters | None = None  # None: the task's hyper-parameters
    # a registered method (mce, baseline, redcore), or compare: mce + baseline
    method: str = "compare"
    # registered method name -> its options (an instance of its MethodSpec.options); a method
    # missing here takes the task's defaults (Task.options_for_method)
    method_options: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None  # data folder of tasks that read files
    seed: int = 0  # masks, initialisation, data order, Monte Carlo plans
    drop_all_missing: bool = False  # independent masks, all-missing samples dropped (not exact)
    # training masks read from this CSV (sample id + a 0/1 column per modality) instead of drawn
    presence_csv: str | None = None
    # how the training masks are drawn: "exact" (each modality misses exactly N r_m samples) or
    # "quota" (each combination of modalities gets its quota floor(N P(S)), PASSION's BraTS
    # scheme); see mce.data.masks.apply_quota_masks
    mask_scheme: Literal["exact", "quota"] = "exact"
    # whether hparams.missing_rates were stated for this run (config_for's missing_rates, the
    # command line's --missing-rates) rather than the task's defaults, which mask only complete
    # training data (see Task.hparams); None: stated when hparams is given
    missing_rates_stated: bool | None = None
    # which test samples score a modality combination C: "available" (every sample holding one
    # of C's modalities, given those it has) or "complete" (only the samples holding all of C:
    # the paper's protocol of complete samples with modalities dropped)
    score_on: Literal["available", "complete"] = "available"
    # what factor B's frozen unimodal models U_m learn from: "available" (each modality's
    # present samples of the masked training split, per run) or "complete" (the paper's "trained
    # with complete single-modal data": every training sample that has the modality before
    # masking, once per task, modality and pretrain_seed, shared by every setting and seed)
    upper_bounds: Literal["available", "complete"] = "available"
    # seed of the unimodal models' initialisation and batch order; None: the run's seed with
    # "available", 0 with "complete" (so every run of an experiment shares them)
    pretrain_seed: int | None = None
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
    # share of the training split held out (seeded) to score every epoch, for tasks without a
    # validation split; the held-out samples are not trained on. 0 (default): train on every
    # training sample, per-epoch validation only for tasks with a validation split
    validation_share: float = 0.0
    # stop training after this many epochs without a better validation score (the task's
    # validation split or the validation_share); None: train every epoch
    early_stop: int | None = None
    # arithmetic of the training steps: "32" (float32), "bf16" or "fp16" (torch.autocast around
    # the forward pass and loss, weights and optimizer in float32; fp16 with a GradScaler, CUDA
    # only). Upper-bound models, validation and tests run in float32
    precision: Literal["32", "bf16", "fp16"] = "32"
    fold: int | None = None  # cross-validation fold 1..task.folds; None: fold 1 of such a task
    # the task's own options (Task.options), e.g. {"crop": 32} for brats; unset ones keep
    # their defaults
    task_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.select not in SELECT_MODES:
            raise ValueError(
                f"select must be one of {', '.join(SELECT_MODES)}, got {self.select!r}"
            )
        share = self.validation_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
            raise ValueError(f"validation_share must be a number in [0, 1), got {share!r}")
        patience = self.early_stop
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
        ):
            raise ValueError(
                f"early_stop must be a whole number of epochs >= 1 or None, got {patience!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.precision == "fp16" and not str(self.device).startswith("cuda"):
            raise ValueError(
                "precision fp16 needs a CUDA device: torch's float16 kernels on the CPU ran a "
                "training step 17-27x slower than float32 (bench/RESULTS.md); use bf16"
            )
        if self.fold is not None and (
            isinstance(self.fold, bool) or not isinstance(self.fold, int) or self.fold < 1
        ):
            raise ValueError(f"fold must be a whole number >= 1 or None, got {self.fold!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if self.mask_scheme not in MASK_SCHEMES:
            raise ValueError(
                f"mask_scheme must be one of {', '.join(MASK_SCHEMES)}, got {self.mask_scheme!r}"
            )
        _check_mask_sources(self.mask_scheme, self.drop_all_missing, self.presence_csv)
        if self.missing_rates_stated is None:
            object.__setattr__(self, "missing_rates_stated", self.hparams is not None)
        if self.score_on not in SCORE_ON:
            raise ValueError(
                f"score_on must be one of {', '.join(SCORE_ON)}, got {self.score_on!r}"
            )
        if self.upper_bounds not in UPPER_BOUND_MODES:
            raise ValueError(
                f"upper_bounds must be one of {', '.join(UPPER_BOUND_MODES)}, got "
                f"{self.upper_bounds!r}"
            )
        seed = self.pretrain_seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"pretrain_seed must be a whole number >= 0 or None, got {seed!r}")
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
        for name, options in self.method_options.items():
            if not dataclasses.is_dataclass(options) or isinstance(options, type):
                raise ValueError(
                    f"method_options[{name!r}] must be the method's options dataclass instance, "
                    f"got {type(options).__name__}"
                )
        object.__setattr__(self, "method_options", dict(self.method_options))

    @property
    def upper_bound_seed(self) -> int:
        """The seed of the unimodal upper-bound models (see ``pretrain_seed``)."""
        if self.pretrain_seed is not None:
            return self.pretrain_seed
        return 0 if self.upper_bounds == "complete" else self.seed

    def options_for(self, method: str) -> Any:
        """The options of the method registered as ``method`` (None: none are set, as for a
        method without options)."""
        return self.method_options.get(method)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, every value resolved (``progress``, ``no_cache`` and ``threads`` are left
        out: they change nothing, a cached unimodal model being the one retraining would give,
        bar the order of floating-point sums across threads)."""
        values = dataclasses.asdict(self)
        values.pop("progress")
        values.pop("no_cache")
        values.pop("threads")
        if self.hparams is not None:
            values["hparams"]["missing_rates"] = list(self.hparams.missing_rates)
        return values
