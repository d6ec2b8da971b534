"""`python -m mce.experiment`: variants x missing-rate settings x seeds of one task, one table.

Each cell (variant, setting, seed) is an ordinary run folder written by :func:`mce.train.run`
under ``OUT/cells/<variant>/<setting>/seed<k>/``; a cell whose ``results.json`` exists is
finished and never recomputed, and a cell interrupted mid-training resumes from its checkpoint.
The summary (``summary.json``, ``summary.md``, ``summary.csv``, ``cells.csv``) gives, per setting
and per modality combination and their average, each variant's mean +- std with a Student-t 95%
confidence interval over seeds, and the paired difference of each variant minus the reference
(``baseline``) over the same seeds, with its interval and the paired t-test p-value.

A *variant* is a named training recipe: a registered method (``mce`` or ``baseline``) with MCE
switches (:class:`mce.methods.mce.MCEConfig` ``use_*``). ``--ablation table2`` names the rows
a-m of the paper's Table 2.

Example:
    python -m mce.experiment --task digits --seeds 0-4 --settings 0.8,0.2 0.5,0.5
    python -m mce.experiment --ablation table2 --seeds 0-9 --out runs/table2
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import io
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mce.config import HPARAM_NAMES, MCE_NAMES, HyperParameters, TrainConfig, hparam_arguments
from mce.data.masks import parse_missing_rates
from mce.methods.mce import MCEConfig
from mce.records import CONFIG
from mce.stats import PairedDifference, Summary, paired_difference, summarize
from mce.tasks import Task, get_task
from mce.train import run as train_run

__all__ = [
    "ABLATIONS",
    "VARIANTS",
    "Cell",
    "ExperimentSpec",
    "Variant",
    "main",
    "run_experiment",
    "summarize_experiment",
    "upper_bound_scores",
]

log = logging.getLogger("mce.experiment")

RESULTS = "results.json"
EXPERIMENT = "experiment.json"
SUMMARY = "summary.json"
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
        method: the registered training method it runs (``mce`` or ``baseline``).
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
        """Which of A, B, L_single, L_sub, L_aux the variant trains with (none for baseline)."""
        if self.method == "baseline":
            return {label: False for label in SWITCH_LABELS.values()}
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

ABLATIONS: dict[str, tuple[str, ...]] = {"table2": tuple(name for _, name, _ in _T2)}
"""Named sets of variants (``--ablation NAME``)."""

REFERENCE = "baseline"  # differences are "variant - baseline", paired by seed


def setting_name(rates: Sequence[float]) -> str:
    """Folder name of a missing-rate setting, e.g. ``rates0.8-0.2``."""
    return "rates" + "-".join(f"{rate:g}" for rate in rates)


@dataclass(frozen=True)
class ExperimentSpec:
    """The grid of an experiment and what every cell shares.

    Attributes:
        task: task name (or ``package.module:ATTRIBUTE``).
        variants: names in :data:`VARIANTS`.
        settings: missing rates per setting, one per modality each.
        seeds: the seeds (replicates) of every (variant, setting).
        overrides: :class:`HyperParameters` / :class:`MCEConfig` fields set in every cell
            (``{"epochs": 2, "mc_k": 10}``); a variant's own switches win over these.
        device: cpu, cuda or cuda:N.
        data_dir: data folder of tasks that read files.
        cache_dir: upper-bound model cache (None: the default of ``mce.train``).
    """

    task: str
    variants: tuple[str, ...] = ("mce", "baseline")
    settings: tuple[tuple[float, ...], ...] = ()
    seeds: tuple[int, ...] = (0,)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    data_dir: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        unknown = [name for name in self.variants if name not in VARIANTS]
        if unknown:
            raise ValueError(
                f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}"
            )
        if not self.variants or not self.seeds:
            raise ValueError("an experiment needs at least one variant and one seed")
        names = (set(HPARAM_NAMES) | set(MCE_NAMES)) - {"missing_rates"}
        bad = sorted(set(self.overrides) - names)
        if bad:
            raise ValueError(
                f"override(s) {', '.join(bad)} are not settable per experiment; valid: "
                f"{', '.join(sorted(names))} (missing rates: the settings)"
            )
        if len(set(self.variants)) != len(self.variants) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("variants and seeds must not repeat")

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "variants": list(self.variants),
            "settings": [list(rates) for rates in self.settings],
            "seeds": list(self.seeds),
            "overrides": dict(self.overrides),
            "device": self.device,
            "data_dir": self.data_dir,
            "cache_dir": self.cache_dir,
        }


@dataclass(frozen=True)
class Cell:
    """One run of the grid. Replicates pair across variants by ``replicate`` (the seed folder;
    folds, when added, will make it ``seed<k>-fold<f>``)."""

    variant: Variant
    rates: tuple[float, ...]
    seed: int

    @property
    def setting(self) -> str:
        return setting_name(self.rates)

    @property
    def replicate(self) -> str:
        return f"seed{self.seed}"

    def folder(self, out: Path) -> Path:
        return out / "cells" / self.variant.name / self.setting / self.replicate

    def config(self, spec: ExperimentSpec, out: Path) -> TrainConfig:
        settings = dict(spec.overrides)
        if self.variant.method == "mce":
            settings.update({key: self.variant.switches.get(key, True) for key in SWITCHES})
        return TrainConfig.for_task(
            spec.task,
            method=self.variant.method,
            seed=self.seed,
            missing_rates=self.rates,
            device=spec.device,
            data_dir=spec.data_dir,
            cache_dir=spec.cache_dir,
            out=str(self.folder(out)),
            progress=False,
            **settings,
        )


def cells_of(spec: ExperimentSpec, task: Task) -> list[Cell]:
    """Every cell of the grid, in the order they run (setting, seed, variant)."""
    settings = spec.settings or (task.hparams.rates_for(task.modalities),)
    return [
        Cell(VARIANTS[name], tuple(rates), seed)
        for rates in settings
        for seed in spec.seeds
        for name in spec.variants
    ]


def _check_spec(out: Path, spec: ExperimentSpec) -> None:
    """An experiment folder keeps its task and shared settings; the grid may grow."""
    path = out / EXPERIMENT
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    now = json.loads(json.dumps(spec.to_dict()))
    differ = [
        key for key in ("task", "overrides", "device", "data_dir") if saved.get(key) != now.get(key)
    ]
    if differ:
        raise ValueError(
            f"{out} holds an experiment with other {', '.join(differ)} (see {path}); "
            "use the same options or another --out"
        )


def _check_finished(cell_dir: Path, config: TrainConfig) -> None:
    saved = json.loads((cell_dir / CONFIG).read_text()).get("config", {})
    now = json.loads(json.dumps(config.to_dict()))
    keys = sorted((set(saved) | set(now)) - {"out"})
    differ = [key for key in keys if saved.get(key) != now.get(key)]
    if differ:
        raise ValueError(
            f"finished cell {cell_dir} was run with other settings ({', '.join(differ)}); "
            "use another --out or delete the cell"
        )


def run_experiment(
    spec: ExperimentSpec,
    out: str | Path | None = None,
    *,
    progress: bool = True,
    figures: bool = True,
    task: Task | None = None,
) -> dict[str, Any]:
    """Run every unfinished cell of the grid, then write the summary (and figures).

    Args:
        spec: the grid and what its cells share.
        out: the experiment folder (default ``runs/experiment-<task>``; the same folder again
            continues the experiment: finished cells are reused, interrupted ones resumed).
        progress: a progress bar over the cells.
        figures: build the figures of :mod:`mce.report` (needs matplotlib; skipped with a
            warning without it).
        task: a ``Task`` object to use instead of looking ``spec.task`` up.

    Returns:
        The summary, as written to ``summary.json``.

    Raises:
        ValueError: the folder holds an experiment or finished cells with other settings.
    """
    started = time.perf_counter()
    task = task if task is not None else get_task(spec.task)
    task = dataclasses.replace(task, load=functools.lru_cache(maxsize=1)(task.load))  # once
    out = Path(out if out is not None else f"runs/experiment-{task.name}")
    out.mkdir(parents=True, exist_ok=True)
    _check_spec(out, spec)
    (out / EXPERIMENT).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    cells = cells_of(spec, task)
    pending, reused = [], 0
    for cell in cells:
        folder = cell.folder(out)
        if (folder / RESULTS).is_file():
            _check_finished(folder, cell.config(spec, out))
            reused += 1
        else:
            pending.append(cell)
    bar = tqdm(total=len(cells), initial=reused, desc="cells", unit="cell", disable=not progress)
    with bar:
        for cell in pending:
            folder = cell.folder(out)
            bar.set_postfix_str(f"{cell.variant.name} {cell.setting} {cell.replicate}")
            resume = (folder / CONFIG).is_file()
            with contextlib.redirect_stdout(io.StringIO()):  # each cell's table is in its folder
                train_run(cell.config(spec, out), resume=resume, task=task)
            bar.update(1)
    summary = summarize_experiment(out, spec, task)
    summary["wall_time_s"] = round(time.perf_counter() - started, 3)
    summary["cells_computed"] = len(pending)
    summary["cells_reused"] = reused
    write_summary(out, summary)
    if figures:
        try:
            from mce.report import build_report

            build_report(out)
        except ImportError as error:  # matplotlib is the optional extra "report"
            log.warning("figures skipped (%s); pip install 'mce[report]'", error)
    return json.loads((out / SUMMARY).read_text())


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def upper_bound_scores(results: Mapping[str, Any]) -> dict[str, float]:
    """{modality: held-out score in %} of the unimodal upper-bound models a run recorded.

    Reads ``results["upper_bounds"]`` defensively, as written by the pretraining code: per
    modality a number or a dict holding one of ``heldout_utility``, ``heldout``, ``test``,
    ``score`` (first found). Values at most 1 are read as utilities in [0, 1] and given in %.
    Anything else (absent, not a number) is left out: callers then show the heads only.
    """
    bounds = results.get("upper_bounds")
    scores: dict[str, float] = {}
    if not isinstance(bounds, Mapping):
        return scores
    for modality, entry in bounds.items():
        value = entry
        if isinstance(entry, Mapping):
            value = next(
                (
                    entry[key]
                    for key in ("heldout_utility", "heldout", "test", "score")
                    if key in entry
                ),
                None,
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            continue
        scores[str(modality)] = float(value) * (100.0 if abs(value) <= 1.0 else 1.0)
    return scores


def _cell_results(out: Path, cells: Iterable[Cell]) -> dict[Cell, dict[str, Any]]:
    return {cell: json.loads((cell.folder(out) / RESULTS).read_text()) for cell in cells}


def summarize_experiment(out: Path, spec: ExperimentSpec, task: Task) -> dict[str, Any]:
    """Statistics over the seeds of every finished cell of the grid (see the module doc)."""
    cells = cells_of(spec, task)
    results = _cell_results(out, cells)
    first = next(iter(results.values()))
    settings: dict[str, dict[str, Any]] = {}
    raw: list[dict[str, Any]] = []
    for cell, record in results.items():
        rates = dict(zip(task.modalities, cell.rates))
        entry = settings.setdefault(cell.setting, {"rates": rates, "seeds": []})
        if cell.seed not in entry["seeds"]:
            entry["seeds"].append(cell.seed)
        method = cell.variant.method
        for combo, score in record["scores"][method].items():
            raw.append(
                {
                    "setting": cell.setting,
                    "variant": cell.variant.name,
                    "seed": cell.seed,
                    "combination": combo,
                    "score": score,
                }
            )
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    differences: dict[str, dict[str, dict[str, Any]]] = {}
    heads: dict[str, dict[str, dict[str, Any]]] = {}
    upper: dict[str, dict[str, Any]] = {}
    for setting in settings:
        by_variant = {
            name: {
                c.replicate: r
                for c, r in results.items()
                if c.setting == setting and c.variant.name == name
            }
            for name in spec.variants
        }
        scores[setting] = {
            name: _stats_by_key(
                {rep: r["scores"][VARIANTS[name].method] for rep, r in reps.items()}
            )
            for name, reps in by_variant.items()
        }
        heads[setting] = {
            name: _stats_by_key(
                {
                    rep: r.get("unimodal_heads", {}).get(VARIANTS[name].method, {})
                    for rep, r in reps.items()
                }
            )
            for name, reps in by_variant.items()
        }
        bounds: dict[str, dict[str, float]] = {}
        for reps in by_variant.values():
            for rep, record in reps.items():
                for modality, value in upper_bound_scores(record).items():
                    bounds.setdefault(rep, {})[modality] = value
        if bounds:
            upper[setting] = _stats_by_key(bounds)
        if REFERENCE in by_variant:
            reference = by_variant[REFERENCE]
            differences[setting] = {
                f"{name} - {REFERENCE}": _paired_by_key(
                    {rep: r["scores"][VARIANTS[name].method] for rep, r in reps.items()},
                    {rep: r["scores"]["baseline"] for rep, r in reference.items()},
                )
                for name, reps in by_variant.items()
                if name != REFERENCE
            }
    return {
        "task": task.name,
        "metric": first["metric"],
        "unit": "%",
        "confidence": 0.95,
        "statistics": "mean and sample std (ddof=1) over seeds; CI: Student t with n-1 degrees "
        "of freedom; differences: variant - baseline paired by seed, two-sided paired t-test "
        "(scipy.stats.ttest_rel); null (n/a) where fewer than 2 seeds",
        "variants": {name: VARIANTS[name].to_dict() for name in spec.variants},
        "reference": REFERENCE if REFERENCE in spec.variants else None,
        "settings": settings,
        "seeds": list(spec.seeds),
        "spec": spec.to_dict(),
        "test_samples": first["test_samples"],
        "scores": scores,
        "differences": differences,
        "unimodal_heads": heads,
        "upper_bounds": upper,
        "cell_time_s": round(
            sum(sum(t.values()) for r in results.values() for t in r["timing_s"].values()), 3
        ),
        "cells": [
            {
                "variant": cell.variant.name,
                "setting": cell.setting,
                "seed": cell.seed,
                "path": str(cell.folder(out).relative_to(out)),
            }
            for cell in cells
        ],
        "raw": raw,
    }


def _stats_by_key(per_replicate: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """{key: Summary dict + values} over replicates, for the keys (combinations) of any."""
    keys: list[str] = []
    for values in per_replicate.values():
        keys += [key for key in values if key not in keys]
    table = {}
    for key in keys:
        values = [v[key] for v in per_replicate.values() if key in v]
        table[key] = {**summarize(values).to_dict(), "values": values}
    return table


def _paired_by_key(
    first: Mapping[str, Mapping[str, float]], second: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    shared = [rep for rep in first if rep in second]
    keys = [key for key in (first[shared[0]] if shared else {}) if key in second[shared[0]]]
    return {
        key: {
            **paired_difference(
                [first[rep][key] for rep in shared], [second[rep][key] for rep in shared]
            ).to_dict(),
            "replicates": shared,
        }
        for key in keys
    }


# --------------------------------------------------------------------------------------------
# Writing: JSON, Markdown, CSV
# --------------------------------------------------------------------------------------------


def _summary_of(entry: Mapping[str, Any]) -> Summary:
    return Summary(*(_nan(entry[key]) for key in ("n", "mean", "std", "ci_low", "ci_high")))


def _difference_of(entry: Mapping[str, Any]) -> PairedDifference:
    keys = ("n", "mean", "std", "ci_low", "ci_high")
    return PairedDifference(*(_nan(entry[key]) for key in keys), p_value=_nan(entry["p_value"]))


def _nan(value: Any) -> Any:
    return math.nan if value is None else value


def markdown(summary: Mapping[str, Any]) -> str:
    """The summary as Markdown: per setting, combinations x variants (mean ± std [95% CI]) and
    ``mce - baseline`` (difference [95% CI], p); with more than two variants, an overview of
    the averages with each variant's components (the layout of the paper's Table 2)."""
    variants = list(summary["variants"])
    metric = summary["metric"]
    seeds = summary["seeds"]
    counts = (
        f"{len(variants)} variant(s) x {len(summary['settings'])} setting(s) x {len(seeds)} "
        f"seed(s) ({', '.join(map(str, seeds))}); test split of {summary['test_samples']} "
        "samples."
    )
    legend = (
        "Cells: mean ± std [95% CI] over seeds (sample std; Student t interval with n-1 degrees "
        "of freedom). Differences: variant − baseline paired by seed, mean [95% CI], p = "
        "two-sided paired t-test. n/a: fewer than 2 seeds."
    )
    timing = (
        f"Wall time of the runner: {summary.get('wall_time_s', math.nan):.1f} s "
        f"({summary.get('cells_computed', 0)} cell(s) computed, "
        f"{summary.get('cells_reused', 0)} reused; {summary['cell_time_s']:.1f} s of training "
        "and evaluation recorded by the cells)."
    )
    lines = [f"# Experiment: {summary['task']}, {metric} (%)", "", counts, "", legend, "", timing]
    # the combination table's difference column: mce - baseline, or the one other variant's
    others = [name for name in variants if name != REFERENCE]
    treatment = "mce" if "mce" in others else (others[0] if len(others) == 1 else None)
    diff_name = f"{treatment} - {REFERENCE}"
    for setting, info in summary["settings"].items():
        rates = ", ".join(f"{m}={r:g}" for m, r in info["rates"].items())
        lines += ["", f"## Missing rates {rates} (`{setting}`)", ""]
        table = summary["scores"][setting]
        diffs = summary["differences"].get(setting, {})
        header = [f"{name}" for name in variants]
        show_diff = diff_name in diffs
        if show_diff:
            header.append(f"{treatment} − {REFERENCE}")
        lines.append("| combination | " + " | ".join(header) + " |")
        lines.append("|---" * (len(header) + 1) + "|")
        combos = list(next(iter(table.values())))
        for combo in combos:
            cells = [_summary_of(table[name][combo]).text() for name in variants]
            if show_diff:
                cells.append(_difference_of(diffs[diff_name][combo]).text())
            label = f"**{combo}**" if combo == "average" else combo
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if len(variants) > 2:
            lines += ["", "Averages over the combinations, by variant (Table 2 layout):", ""]
            parts = list(SWITCH_LABELS.values())
            lines.append("| row | variant | " + " | ".join(parts) + " | average | − baseline |")
            lines.append("|---" * (len(parts) + 4) + "|")
            for name in variants:
                info_v = summary["variants"][name]
                marks = ["✓" if info_v["components"][part] else "" for part in parts]
                key = f"{name} - baseline"
                diff = _difference_of(diffs[key]["average"]).text() if key in diffs else ""
                lines.append(
                    f"| {info_v['table2_row'] or ''} | {name} | "
                    + " | ".join(marks)
                    + f" | {_summary_of(table[name]['average']).text()} | {diff} |"
                )
    files = (
        "Files: summary.json (all statistics), summary.csv, cells.csv (every cell's scores), "
        "cells/<variant>/<setting>/seed<k>/ (run folders)."
    )
    lines += ["", files, ""]
    return "\n".join(lines)


CSV_FIELDS = (
    "kind",
    "setting",
    "variant",
    "combination",
    "n",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "p_value",
)


def csv_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Long format: kind score / difference / unimodal_head / upper_bound, one row each."""
    rows = []
    sources = (
        ("score", summary["scores"]),
        ("difference", summary["differences"]),
        ("unimodal_head", summary["unimodal_heads"]),
    )
    for kind, block in sources:
        for setting, by_variant in block.items():
            for variant, by_key in by_variant.items():
                for key, entry in by_key.items():
                    row = {"kind": kind, "setting": setting, "variant": variant}
                    row["combination"] = key
                    row.update({f: entry.get(f) for f in CSV_FIELDS[4:]})
                    rows.append(row)
    for setting, by_key in summary["upper_bounds"].items():
        for key, entry in by_key.items():
            row = {"kind": "upper_bound", "setting": setting, "variant": "", "combination": key}
            row.update({f: entry.get(f) for f in CSV_FIELDS[4:]})
            rows.append(row)
    return rows


def write_summary(out: Path, summary: Mapping[str, Any]) -> None:
    """``summary.json``, ``summary.md``, ``summary.csv`` and ``cells.csv`` in ``out``."""
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    with (out / "summary.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(summary))
    with (out / "cells.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, ("setting", "variant", "seed", "combination", "score"))
        writer.writeheader()
        writer.writerows(summary["raw"])


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_seeds(text: str) -> tuple[int, ...]:
    """``0,1,2``, ``0-4`` or a mix (``0-2,7``)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            if dash:
                seeds += range(int(first), int(last) + 1)
            else:
                seeds.append(int(first))
    except ValueError as error:
        raise ValueError(f"seeds {text!r} are not like 0,1,2 or 0-4") from error
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds {text!r} must be distinct non-negative numbers")
    return tuple(seeds)


def _parse_value(name: str, text: str) -> Any:
    source = HyperParameters if name in HPARAM_NAMES else MCEConfig
    default = {f.name: f.default for f in dataclasses.fields(source)}[name]
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} takes true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mce.experiment",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", default="digits", help="task name (default: digits)")
    parser.add_argument("--data-dir", default=None, help="data folder of tasks that read files")
    parser.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated variants: {', '.join(VARIANTS)} (default: mce,baseline, or "
        "none with --ablation)",
    )
    parser.add_argument(
        "--ablation",
        choices=list(ABLATIONS),
        default=None,
        help="a named set of variants added to --variants; table2: the paper's Table 2 rows a-m "
        f"({', '.join(ABLATIONS['table2'])})",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        default=None,
        help="missing-rate settings, each comma-separated rates (one per modality) or a "
        "3-modality preset a-f (default: the task's missing rates)",
    )
    parser.add_argument(
        "--seeds", default="0,1,2", help="seeds: 0,1,2 or 0-4 or 0-2,7 (default: 0,1,2)"
    )
    group = parser.add_argument_group("shared by every cell")
    for flag, options in hparam_arguments(lambda _: "default: the task's", {"missing_rates"}):
        group.add_argument(flag, **options)
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"an MCE option for every mce cell: {', '.join(n for n in MCE_NAMES)} "
        "(a variant's own use_* switches win)",
    )
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    group.add_argument("--cache-dir", default=None, help="upper-bound model cache")
    parser.add_argument(
        "--out",
        default=None,
        help="experiment folder; the same folder again continues it, reusing finished cells "
        "(default: runs/experiment-<task>)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    return parser


def parse_spec(argv: Sequence[str] | None = None) -> tuple[ExperimentSpec, argparse.Namespace]:
    """The experiment of the command line; bad arguments exit with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        task = get_task(args.task)
    except ValueError as error:
        parser.error(str(error))
    names: list[str] = []
    if args.variants:
        names += [name.strip() for name in args.variants.split(",") if name.strip()]
    if args.ablation:
        names += [name for name in ABLATIONS[args.ablation] if name not in names]
    if not names:
        names = ["mce", "baseline"]
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in HPARAM_NAMES
        if name != "missing_rates" and getattr(args, name) is not None
    }
    try:
        for item in args.set:
            name, equals, value = item.partition("=")
            if not equals or name not in MCE_NAMES:
                raise ValueError(f"--set {item!r}: expected NAME=VALUE, NAME one of {MCE_NAMES}")
            overrides[name] = _parse_value(name, value)
        settings = tuple(
            parse_missing_rates(text, len(task.modalities)) for text in args.settings or ()
        )
        spec = ExperimentSpec(
            task=args.task,
            variants=tuple(names),
            settings=settings,
            seeds=parse_seeds(args.seeds),
            overrides=overrides,
            device=args.device,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
        )
        # build one cell's config now, so a bad value fails before anything runs
        cells_of(spec, task)[0].config(spec, Path("."))
    except ValueError as error:
        parser.error(str(error))
    return spec, args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    spec, args = parse_spec(argv)
    try:
        summary = run_experiment(
            spec, args.out, progress=not args.no_progress, figures=not args.no_figures
        )
    except KeyboardInterrupt:
        return 130
    except (ValueError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out = Path(args.out if args.out else f"runs/experiment-{summary['task']}")
    print((out / "summary.md").read_text())
    print(f"summary in {out}/summary.json, summary.md, summary.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
