"""The paper's experiments as named protocols (``python -m mce.experiment --protocol NAME``).

A protocol fixes what the paper fixed for one table or figure: the task, the methods compared
(in this package's variant names), the missing-rate settings, the seeds, the epochs (each task's
defaults are the paper's Table 1), the metric and the combinations averaged (every non-empty
combination, as every summary), and where the upper bounds of factor B come from (the paper's
"trained with complete single-modal data": ``complete``). Any flag given with ``--protocol``
still wins; the experiment records which ones did (:attr:`ResolvedProtocol.overrides`).

Methods the paper compares but this package does not implement (UniMF, SMIL) are listed by
:attr:`Protocol.lacking` and named in the summary; their published values are still shown.
``table8`` measures costs instead of training cells (:mod:`mce.experiment.costs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mce.data.masks import PRESETS
from mce.methods import METHODS
from mce.tasks import Task

__all__ = ["PROTOCOLS", "Protocol", "ResolvedProtocol", "get_protocol", "resolve_protocol"]

TEN_RUNS = tuple(range(10))
"""Seeds of a protocol of "10 independent experimental runs" (the paper does not list them)."""

PAPER_SETTINGS = ("a", "b", "c", "d", "e", "f")
"""The six settings of Tables 3-5: the permutations of (0.2, 0.5, 0.8), as ``Task.presets``."""


def _task_presets(task: Task) -> Mapping[str, tuple[float, ...]]:
    """The task's named settings (a task of three modalities without its own: the paper's)."""
    if task.presets is not None:
        return task.presets
    return PRESETS if len(task.modalities) == 3 else {}


def _presets(task: Task) -> tuple[tuple[float, ...], ...]:
    presets = _task_presets(task)
    missing = [name for name in PAPER_SETTINGS if name not in presets]
    if missing:
        raise ValueError(
            f"task {task.name!r} has no missing-rate presets {', '.join(missing)} (the paper's "
            "settings a-f of three modality groups)"
        )
    return tuple(tuple(presets[name]) for name in PAPER_SETTINGS)


def _table2_settings(task: Task) -> tuple[tuple[float, ...], ...]:
    """(0.2, 0.5, 0.8) (the paper's Table 2, setting a) where the task has that preset; else
    the task's own default rates (two-modality tasks: the paper has no Table 2 row)."""
    presets = _task_presets(task)
    if "a" in presets:
        return (tuple(presets["a"]),)
    return (task.hparams.rates_for(task.modalities),)


AUDIO_PRESENT = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Fig. 7's x axis: the share of training samples with audio (every image present)."""

DEMO_AUDIO_PRESENT = (0.1, 0.2, 0.5, 1.0)
"""The bundled digits' small demo of Fig. 7: four of its audio shares."""


def _fig7_settings(shares: tuple[float, ...]) -> Callable[[Task], tuple[tuple[float, ...], ...]]:
    def settings(task: Task) -> tuple[tuple[float, ...], ...]:
        if task.modalities != ("image", "audio"):
            raise ValueError(
                f"fig7 needs a task of modalities (image, audio), got {task.name!r} "
                f"({', '.join(task.modalities)})"
            )
        return tuple((0.0, round(1.0 - share, 10)) for share in shares)

    return settings


@dataclass(frozen=True)
class Protocol:
    """One of the paper's experiments.

    Attributes:
        name: ``--protocol`` value and the published table's name (:mod:`published`).
        title: one line: what the paper's table or figure shows.
        tasks: tasks it runs on; the first is the default (None: any task, given by ``--task``).
        variants: the paper's rows, in this package's names (``baseline`` first: the reference
            of every paired difference, added where the paper has no baseline row).
        settings: the task -> its missing-rate settings (one rate per modality each).
        seeds: the replicates.
        upper_bounds: where factor B's unimodal models learn from (``complete``: as the paper).
        per_task: changes for one task (``{"digits": {"seeds": (0, 1, 2)}}``), e.g. a smaller
            demo on the bundled data.
        notes: lines for the summary: where the protocol departs from the paper and why.
        kind: ``cells`` (trained runs, a grid of :mod:`mce.experiment`) or ``costs`` (step
            timings of :mod:`mce.experiment.costs`; ``variants`` are its measured recipes).
    """

    name: str
    title: str
    tasks: tuple[str, ...] | None
    variants: tuple[str, ...]
    settings: Callable[[Task], tuple[tuple[float, ...], ...]]
    seeds: tuple[int, ...]
    upper_bounds: str = "complete"
    per_task: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    kind: str = "cells"

    @property
    def lacking(self) -> tuple[str, ...]:
        """The paper's methods of this protocol that no registered method implements."""
        from mce.experiment.grid import VARIANTS

        if self.kind != "cells":
            return ()
        return tuple(name for name in self.variants if name not in VARIANTS and name not in METHODS)

    def default_task(self) -> str | None:
        return self.tasks[0] if self.tasks else None


_TABLE2_VARIANTS = (
    "baseline", "t2-b", "lsub-only", "t2-d", "t2-e", "t2-f", "t2-g", "t2-h", "t2-i", "t2-j",
    "t2-k", "t2-l", "mce",
)  # fmt: skip

PROTOCOLS: dict[str, Protocol] = {
    "table2": Protocol(
        name="table2",
        title="Table 2: component ablation, rows a-m, at missing rates (0.2, 0.5, 0.8)",
        tasks=None,
        variants=_TABLE2_VARIANTS,
        settings=_table2_settings,
        seeds=TEN_RUNS,
        per_task={"nuscenes": {"seeds": (125,)}},
        notes=(
            "nuScenes: one run, seed 125, as the paper; the other tasks 10 runs (the paper's "
            "IEMOCAP column gives mean, std and CI).",
            "Row j is B without A on top of row h (the paper's text; its extracted table ticks "
            "A and B in both j and m).",
        ),
    ),
    "table3": Protocol(
        name="table3",
        title="Table 3: IoU on nuScenes, settings a-f of (C, L, R), one run with seed 125",
        tasks=("nuscenes",),
        variants=("baseline", "pmr", "mbt-sample", "shaspec", "redcore", "mce"),
        settings=_presets,
        seeds=(125,),
        notes=(
            "The paper's Table 3 has no baseline row; the baseline is trained as the reference "
            "of the paired differences.",
        ),
    ),
    "table4": Protocol(
        name="table4",
        title="Table 4: Dice WT/TC/ET on BraTS2020, settings a-f of (T1/T1c, Flair, T2), 10 runs",
        tasks=("brats",),
        variants=("baseline", "pmr", "mbt-sample", "passion", "mce"),
        settings=_presets,
        seeds=TEN_RUNS,
    ),
    "table5": Protocol(
        name="table5",
        title="Table 5: accuracy on IEMOCAP, settings a-f of (A, L, V), 10 runs",
        tasks=("iemocap",),
        variants=("baseline", "unimf", "mbt-sample", "redcore", "mce"),
        settings=_presets,
        seeds=TEN_RUNS,
        notes=(
            "UniMF is not implemented (one model per availability pattern with autoregressive "
            "test-time generation): its published row is shown, not trained.",
        ),
    ),
    "fig7": Protocol(
        name="fig7",
        title="Fig. 7: accuracy on AudioVisionMNIST, every image present, audio present in "
        "10%...100% of the training samples, evaluated image-only and image+audio",
        tasks=("avmnist", "digits"),
        variants=("baseline", "mce", "redcore", "mbt-sample", "pmr", "passion", "shaspec"),
        settings=_fig7_settings(AUDIO_PRESENT),
        seeds=TEN_RUNS,
        per_task={
            "digits": {
                "variants": ("baseline", "mce"),
                "settings": _fig7_settings(DEMO_AUDIO_PRESENT),
                "seeds": (0, 1, 2),
            }
        },
        notes=(
            "The paper's figure does not name its compared methods in the text; every registered "
            "compared method is trained. The image-only reference (the paper's LeNet5 trained "
            "with image only) is the frozen image model of factor B, trained on every training "
            "image (--upper-bounds complete) and scored on the test split.",
            "On the bundled digits: a small demo (baseline and MCE, audio in 10, 20, 50 and 100 "
            "% of the samples, 3 seeds).",
        ),
    ),
    "table8": Protocol(
        name="table8",
        title="Table 8: time per iteration, FLOPs and memory of the baseline, MCE with exact "
        "Shapley values and MCE with Monte Carlo K = 200, IEMOCAP network, batch 128, rates "
        "(0.2, 0.5, 0.8)",
        tasks=("iemocap",),
        variants=("baseline", "mce-exact", "mce-mc200"),
        settings=lambda task: ((0.2, 0.5, 0.8),),
        seeds=(0,),
        kind="costs",
        notes=(
            "Measured on synthetic IEMOCAP-shaped batches (no data needed); the accuracy column "
            "is Table 5's setting a (run --protocol table5 --settings a).",
        ),
    ),
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; an unknown name is a ``ValueError`` listing the known."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


@dataclass(frozen=True)
class ResolvedProtocol:
    """A protocol applied to a task, after the command line's overrides.

    Attributes:
        name: the protocol.
        task: the task it runs on.
        variants, settings, seeds, upper_bounds: what the experiment runs.
        lacking: the paper's methods left out (not implemented).
        overrides: flag -> value the command line set over the protocol's own choice.
        notes: the protocol's notes.
    """

    name: str
    task: str
    variants: tuple[str, ...]
    settings: tuple[tuple[float, ...], ...]
    seeds: tuple[int, ...]
    upper_bounds: str
    lacking: tuple[str, ...]
    overrides: Mapping[str, Any]
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "variants": list(self.variants),
            "settings": [list(rates) for rates in self.settings],
            "seeds": list(self.seeds),
            "upper_bounds": self.upper_bounds,
            "lacking": list(self.lacking),
            "overrides": dict(self.overrides),
            "notes": list(self.notes),
        }


def resolve_protocol(
    protocol: Protocol,
    task: Task,
    *,
    variants: tuple[str, ...] | None = None,
    settings: tuple[tuple[float, ...], ...] | None = None,
    seeds: tuple[int, ...] | None = None,
    upper_bounds: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ResolvedProtocol:
    """The protocol on ``task``, with what the command line gave (None: the protocol's).

    ``overrides`` names the other flags given (hyper-parameters, method options), recorded as
    such. Raises a ``ValueError`` for a task the protocol does not run on.
    """
    if protocol.tasks is not None and task.name not in protocol.tasks:
        raise ValueError(
            f"--protocol {protocol.name} runs on task {' or '.join(protocol.tasks)}, not "
            f"{task.name!r}"
        )
    own = dict(protocol.per_task.get(task.name, {}))
    chosen_variants = tuple(own.get("variants", protocol.variants))
    runnable = tuple(name for name in chosen_variants if name not in protocol.lacking)
    chosen_settings = own.get("settings", protocol.settings)(task)
    chosen_seeds = tuple(own.get("seeds", protocol.seeds))
    given: dict[str, Any] = dict(overrides or {})
    if variants is not None:
        given["variants"] = list(variants)
    if settings is not None:
        given["settings"] = [list(rates) for rates in settings]
    if seeds is not None:
        given["seeds"] = list(seeds)
    if upper_bounds is not None and upper_bounds != protocol.upper_bounds:
        given["upper_bounds"] = upper_bounds
    return ResolvedProtocol(
        name=protocol.name,
        task=task.name,
        variants=variants if variants is not None else runnable,
        settings=settings if settings is not None else chosen_settings,
        seeds=seeds if seeds is not None else chosen_seeds,
        upper_bounds=upper_bounds if upper_bounds is not None else protocol.upper_bounds,
        lacking=tuple(name for name in chosen_variants if name in protocol.lacking),
        overrides=given,
        notes=protocol.notes,
    )
