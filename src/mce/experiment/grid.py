"""What an experiment is: the variants (the rows of the paper's Table 2), the grid of an
experiment (:class:`ExperimentSpec`) and its cells (:class:`Cell`, :func:`cells_of`).

A *variant* is a named training recipe: a registered method (``mce``, ``baseline`` or
``redcore``) with MCE switches (:class:`mce.methods.mce.MCEConfig` ``use_*``). ``--ablation
table2`` names the rows a-m of the paper's Table 2. Any other registered method (one a user's
module registers) is a variant of its own name (:func:`variant`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mce.methods import METHODS
from mce.tasks import Task
from mce.training.config import HPARAM_NAMES, TrainConfig, option_names
from mce.training.run import config_for

RESULTS = "results.json"
OTHER_COMPONENTS = {"redcore": ("L_single",)}  # MCE's terms that another method trains too
SWITCHES = ("use_a", "use_b", "use_single", "use_sub", "use_aux")
SWITCH_LABELS = {
    "use_a": "A",
    "use_b": "B",
    "use_single": "L_single",
    "use_sub": "L_sub",
    "use_aux": "L_aux",
}


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: VARIANTS holds one each
class Variant:
    """A named training recipe of the runner.

    Attributes:
        name: the name on the command line and the cell folder.
        method: the registered training method it runs (``mce``, ``baseline``, ``redcore``).
        switches: :class:`MCEConfig` ``use_*`` fields that differ from the defaults (all on).
        description: one line for reports.
        table2_row: its row letter in the paper's Table 2, if it is one.
    """

    name: str
    method: str
    switches: Mapping[str, bool] = field(default_factory=dict)
    description: str = ""
    table2_row: str | None = None

    def components(self) -> dict[str, bool]:
        """Which of A, B, L_single, L_sub, L_aux the variant trains with (none for baseline;
        for redcore, L_single: its unimodal heads are trained the same way)."""
        if self.method != "mce":
            return {
                label: label in OTHER_COMPONENTS.get(self.method, ())
                for label in SWITCH_LABELS.values()
            }
        return {label: self.switches.get(key, True) for key, label in SWITCH_LABELS.items()}

    @property
    def trains_heads(self) -> bool:
        """Whether the unimodal heads are trained (by L_single)."""
        return self.components()["L_single"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "switches": dict(self.switches),
            "components": self.components(),
            "description": self.description,
            "table2_row": self.table2_row,
        }


def _mce_variant(name: str, row: str | None, description: str, **on: bool) -> Variant:
    switches = {key: on.get(key, False) for key in SWITCHES}
    switches = {key: value for key, value in switches.items() if not value}
    return Variant(name, "mce", switches, description, row)


# The paper's Table 2, rows a-m: which of A, B, L_single, L_sub, L_aux each row uses. Row a (no
# component) trains L_task alone, which is the baseline's objective through the same model;
# row c (L_sub alone) is ``lsub-only``; row m (everything) is ``mce``.
# Row j: the extracted table text ticks A and B in both j and m, which would make them the same
# run; the paper's text reads "the global factor A (i) and the batch-level factor B (j) are
# incorporated on top of the complete RCE foundation (h)", so j is B (without A) on top of h.
_T2 = [
    ("a", "baseline", {}),
    ("b", "t2-b", {"use_single": True}),
    ("c", "lsub-only", {"use_sub": True}),
    ("d", "t2-d", {"use_aux": True}),
    ("e", "t2-e", {"use_single": True, "use_sub": True}),
    ("f", "t2-f", {"use_single": True, "use_aux": True}),
    ("g", "t2-g", {"use_sub": True, "use_aux": True}),
    ("h", "t2-h", {"use_single": True, "use_sub": True, "use_aux": True}),
    ("i", "t2-i", {"use_a": True, "use_single": True, "use_sub": True, "use_aux": True}),
    ("j", "t2-j", {"use_b": True, "use_single": True, "use_sub": True, "use_aux": True}),
    ("k", "t2-k", {"use_a": True, "use_b": True, "use_single": True}),
    ("l", "t2-l", {"use_a": True, "use_b": True, "use_aux": True}),
    ("m", "mce", {key: True for key in SWITCHES}),
]


def _describe(on: Mapping[str, bool]) -> str:
    used = [SWITCH_LABELS[key] for key in SWITCHES if on.get(key)]
    return "L_task + " + " + ".join(used) if used else "L_task only"


VARIANTS: dict[str, Variant] = {
    "baseline": Variant("baseline", "baseline", {}, "L_task only (Table 2 row a)", "a"),
}
for _row, _name, _on in _T2[1:]:
    VARIANTS[_name] = _mce_variant(_name, _row, f"{_describe(_on)} (Table 2 row {_row})", **_on)
VARIANTS["mce"] = dataclasses.replace(VARIANTS["mce"], description="full MCE (Table 2 row m)")
VARIANTS["redcore"] = Variant(
    "redcore",
    "redcore",
    {},
    "RedCore (Sun et al., AAAI 2024): variational encoders, imagination, beta weights",
)

ABLATIONS: dict[str, tuple[str, ...]] = {"table2": tuple(name for _, name, _ in _T2)}
"""Named sets of variants (``--ablation NAME``)."""

REFERENCE = "baseline"  # differences are "variant - baseline", paired by seed


def variant(name: str) -> Variant:
    """The variant called ``name``: one of :data:`VARIANTS`, else the registered method of
    that name with its own options.

    Raises:
        ValueError: neither a variant nor a registered method; the message lists both.
    """
    if name in VARIANTS:
        return VARIANTS[name]
    if name in METHODS and name != "compare":
        return Variant(name, name, {}, METHODS[name].summary)
    others = [method for method in METHODS if method not in VARIANTS]
    known = ", ".join([*VARIANTS, *others])
    raise ValueError(f"unknown variant(s) {name}; known: {known}")


def settable_names() -> set[str]:
    """What an experiment may set in every cell (:attr:`ExperimentSpec.overrides`): the
    hyper-parameters but the missing rates (the settings), and every registered method's
    options."""
    names = set(HPARAM_NAMES) - {"missing_rates"}
    for spec in METHODS.values():
        if spec.options is not None:
            names |= set(option_names(spec.options))
    return names


def setting_name(rates: Sequence[float]) -> str:
    """Folder name of a missing-rate setting, e.g. ``rates0.8-0.2``."""
    return "rates" + "-".join(f"{rate:g}" for rate in rates)


@dataclass(frozen=True)
class ExperimentSpec:
    """The grid of an experiment and what every cell shares.

    Attributes:
        task: task name (or ``package.module:ATTRIBUTE``).
        variants: names in :data:`VARIANTS`, or of registered methods (:func:`variant`).
        settings: missing rates per setting, one per modality each.
        seeds: the seeds (replicates) of every (variant, setting).
        folds: cross-validation folds of a task with folds; each (seed, fold) is one replicate,
            ``seed<k>-fold<f>`` ((): no fold dimension, the task's default fold).
        overrides: :class:`HyperParameters` fields and registered methods' option fields set
            in every cell (``{"epochs": 2, "mc_k": 10}``, see :func:`settable_names`); a
            variant's own switches win over these.
        device: cpu, cuda or cuda:N.
        data_dir: data folder of tasks that read files.
        cache_dir: upper-bound model cache (None: the default of ``mce.train``).
        task_options: the task's own options (``Task.options``), the same in every cell.
        drop_all_missing: draw each modality's missing samples independently and drop the
            samples left with nothing (:func:`mce.data.masks.apply_missing_rates`).
        mask_scheme: how the masks are drawn (``TrainConfig.mask_scheme``): ``exact`` or
            ``quota`` (:func:`mce.data.masks.apply_quota_masks`).
        upper_bounds: what factor B's unimodal models learn from (``TrainConfig.upper_bounds``):
            ``available`` (each cell's masked split: one set per setting and seed) or
            ``complete`` (the split before masking: one set for the whole experiment).
        pretrain_seed: their seed (None: as :class:`TrainConfig`).
        score_on: which test samples score a combination (``TrainConfig.score_on``).
        protocol: the paper's experiment it runs, resolved
            (:meth:`mce.experiment.protocols.ResolvedProtocol.to_dict`), or None.
    """

    task: str
    variants: tuple[str, ...] = ("mce", "baseline")
    settings: tuple[tuple[float, ...], ...] = ()
    seeds: tuple[int, ...] = (0,)
    folds: tuple[int, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    data_dir: str | None = None
    cache_dir: str | None = None
    task_options: Mapping[str, Any] = field(default_factory=dict)
    drop_all_missing: bool = False
    mask_scheme: str = "exact"
    upper_bounds: str = "available"
    pretrain_seed: int | None = None
    protocol: Mapping[str, Any] | None = None
    score_on: str = "available"

    def __post_init__(self) -> None:
        for name in self.variants:
            variant(name)  # an unknown name is an error naming the known ones
        if not self.variants or not self.seeds:
            raise ValueError("an experiment needs at least one variant and one seed")
        names = settable_names()
        bad = sorted(set(self.overrides) - names)
        if bad:
            raise ValueError(
                f"override(s) {', '.join(bad)} are not settable per experiment; valid: "
                f"{', '.join(sorted(names))} (missing rates: the settings)"
            )
        if len(set(self.variants)) != len(self.variants) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("variants and seeds must not repeat")
        if len(set(self.folds)) != len(self.folds) or any(fold < 1 for fold in self.folds):
            raise ValueError(f"folds must be distinct and at least 1, got {self.folds}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "variants": list(self.variants),
            "settings": [list(rates) for rates in self.settings],
            "seeds": list(self.seeds),
            "folds": list(self.folds),
            "overrides": dict(self.overrides),
            "device": self.device,
            "data_dir": self.data_dir,
            "cache_dir": self.cache_dir,
            "task_options": dict(self.task_options),
            "drop_all_missing": self.drop_all_missing,
            "mask_scheme": self.mask_scheme,
            "upper_bounds": self.upper_bounds,
            "pretrain_seed": self.pretrain_seed,
            "protocol": dict(self.protocol) if self.protocol is not None else None,
            "score_on": self.score_on,
        }


@dataclass(frozen=True)
class Cell:
    """One run of the grid. Replicates pair across variants by ``replicate`` (the folder
    ``seed<k>``, or ``seed<k>-fold<f>`` with folds)."""

    variant: Variant
    rates: tuple[float, ...]
    seed: int
    fold: int | None = None
    stated: bool = True  # False: the task's default rates, not a --settings entry

    @property
    def setting(self) -> str:
        return setting_name(self.rates)

    @property
    def replicate(self) -> str:
        return f"seed{self.seed}" + (f"-fold{self.fold}" if self.fold is not None else "")

    def folder(self, out: Path) -> Path:
        return out / "cells" / self.variant.name / self.setting / self.replicate

    def config(self, spec: ExperimentSpec, out: Path) -> TrainConfig:
        settings = dict(spec.overrides)
        if self.variant.method == "mce":
            settings.update({key: self.variant.switches.get(key, True) for key in SWITCHES})
        if self.stated:
            settings["missing_rates"] = self.rates
        # else the task's defaults, as mce.train without --missing-rates: data that already
        # lacks modalities is then used as it is
        return config_for(
            spec.task,
            method=self.variant.method,
            seed=self.seed,
            fold=self.fold,
            device=spec.device,
            data_dir=spec.data_dir,
            cache_dir=spec.cache_dir,
            task_options=dict(spec.task_options),
            drop_all_missing=spec.drop_all_missing,
            mask_scheme=spec.mask_scheme,
            upper_bounds=spec.upper_bounds,
            pretrain_seed=spec.pretrain_seed,
            score_on=spec.score_on,
            out=str(self.folder(out)),
            progress=False,
            **settings,
        )


def cells_of(spec: ExperimentSpec, task: Task) -> list[Cell]:
    """Every cell of the grid, in the order they run (setting, fold, seed, variant)."""
    settings = spec.settings or (task.hparams.rates_for(task.modalities),)
    stated = bool(spec.settings)
    return [
        Cell(variant(name), tuple(rates), seed, fold, stated)
        for rates in settings
        for fold in spec.folds or (None,)
        for seed in spec.seeds
        for name in spec.variants
    ]
