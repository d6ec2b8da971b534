"""What an experiment reports: statistics over the seeds of every cell of the grid
(:func:`summarize_experiment`), written as ``summary.json``, ``summary.md``, ``summary.csv`` and
``cells.csv`` (:func:`write_summary`).

The task's extra metrics that the cells recorded (``results.json["metrics"][method][metric]``,
e.g. ``uar`` and ``f1``) are summarised like the primary score: ``summary.json`` then holds
``"metrics"`` and ``"metric_differences"`` ({setting: {metric: {variant or "<variant> -
baseline": {combination: statistics}}}}), ``summary.md`` one table per metric after each
setting's main table, and ``summary.csv`` the rows of kind ``metric:<name>`` and
``metric_difference:<name>``. Without extra metrics (e.g. digits) none of these appear."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mce.experiment.grid import (
    REFERENCE,
    RESULTS,
    SWITCH_LABELS,
    Cell,
    ExperimentSpec,
    cells_of,
    variant,
)
from mce.experiment.paper_check import compare as compare_with_paper
from mce.experiment.paper_check import markdown_lines as paper_markdown
from mce.experiment.stats import (
    MIN_INTERVAL_N,
    PairedDifference,
    Summary,
    paired_difference,
    summarize,
)
from mce.tasks import Task
from mce.training.records import package_version
from mce.training.run_folder import write_csv, write_text

SUMMARY = "summary.json"


def upper_bound_scores(results: Mapping[str, Any]) -> dict[str, float]:
    """{modality: score in %} of the unimodal upper-bound models a run recorded.

    Reads ``results["upper_bounds"]`` defensively, as written by the pretraining code: per
    modality a number or a dict holding one of ``test_utility`` (the model on the test split),
    ``heldout_utility``, ``heldout``, ``test``, ``score`` (first found). Values at most 1 are read as utilities in [0, 1] and given in %.
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
                    for key in ("test_utility", "heldout_utility", "heldout", "test", "score")
                    if key in entry and entry[key] is not None
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


def _metric_tables(record: Mapping[str, Any], method: str) -> Mapping[str, Mapping[str, float]]:
    """{metric: {combination: %}} of the extra metrics one run recorded for ``method``."""
    metrics = record.get("metrics")
    by_metric = metrics.get(method) if isinstance(metrics, Mapping) else None
    return by_metric if isinstance(by_metric, Mapping) else {}


def _metric_names(results: Mapping[Cell, Mapping[str, Any]]) -> list[str]:
    """The extra metrics recorded by any cell, in order of first appearance."""
    names: list[str] = []
    for cell, record in results.items():
        tables = _metric_tables(record, cell.variant.method)
        names += [name for name in tables if name not in names]
    return names


def summarize_experiment(out: Path, spec: ExperimentSpec, task: Task) -> dict[str, Any]:
    """Statistics over the seeds of every finished cell of the grid (see the module doc)."""
    cells = cells_of(spec, task)
    results = _cell_results(out, cells)
    first = next(iter(results.values()))
    settings: dict[str, dict[str, Any]] = {}
    raw: list[dict[str, Any]] = []
    for cell, record in results.items():
        rates = dict(zip(task.modalities, cell.rates))
        if record.get("missing_rates", {}).get("source") == "data":  # used as it is
            rates = dict(record["missing_rates"]["actual"])
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
    metric_names = _metric_names(results)
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    metric_differences: dict[str, dict[str, dict[str, Any]]] = {}
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
                {rep: r["scores"][variant(name).method] for rep, r in reps.items()}
            )
            for name, reps in by_variant.items()
        }
        heads[setting] = {
            name: _stats_by_key(
                {
                    rep: r.get("unimodal_heads", {}).get(variant(name).method, {})
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
                    {rep: r["scores"][variant(name).method] for rep, r in reps.items()},
                    {rep: r["scores"]["baseline"] for rep, r in reference.items()},
                )
                for name, reps in by_variant.items()
                if name != REFERENCE
            }
        if metric_names:
            metrics[setting], metric_differences[setting] = _summarize_metrics(
                metric_names, by_variant
            )
    extra = {"metrics": metrics, "metric_differences": metric_differences} if metric_names else {}
    summary = {
        "task": task.name,
        "metric": first["metric"],
        "unit": "%",
        "confidence": 0.95,
        "statistics": "mean and sample std (ddof=1) over seeds; CI: Student t with n-1 degrees "
        "of freedom; differences: variant - baseline paired by seed, two-sided paired t-test "
        "(scipy.stats.ttest_rel); null (n/a) where fewer than 2 seeds",
        "variants": {name: variant(name).to_dict() for name in spec.variants},
        "reference": REFERENCE if REFERENCE in spec.variants else None,
        "settings": settings,
        "seeds": list(spec.seeds),
        "spec": spec.to_dict(),
        "test_samples": first["test_samples"],
        "scores": scores,
        "differences": differences,
        **extra,
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
        "package_version": package_version(),
        "protocol": dict(spec.protocol) if spec.protocol else None,
    }
    summary["paper"] = compare_with_paper(summary)
    return summary


def _summarize_metrics(
    names: Iterable[str], by_variant: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """({metric: {variant: stats by combination}}, {metric: {"<variant> - baseline": paired
    stats by combination}}) of one setting, ``by_variant`` being {variant: {replicate: results}}.
    """
    stats: dict[str, dict[str, Any]] = {}
    paired: dict[str, dict[str, Any]] = {}
    for metric in names:
        values = {
            name: {
                rep: _metric_tables(r, variant(name).method).get(metric, {})
                for rep, r in reps.items()
            }
            for name, reps in by_variant.items()
        }
        stats[metric] = {name: _stats_by_key(reps) for name, reps in values.items()}
        if REFERENCE in values:
            paired[metric] = {
                f"{name} - {REFERENCE}": _paired_by_key(reps, values[REFERENCE])
                for name, reps in values.items()
                if name != REFERENCE
            }
    return stats, paired


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
    keys = [
        key
        for key in (first[shared[0]] if shared else {})
        if all(key in first[rep] and key in second[rep] for rep in shared)
    ]
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
    """A score's summary as printed: its interval clipped to 0-100 %."""
    summary = Summary(*(_nan(entry[key]) for key in ("n", "mean", "std", "ci_low", "ci_high")))
    return summary.readable(0.0, 100.0)


def _difference_of(entry: Mapping[str, Any]) -> PairedDifference:
    """A paired difference as printed: its interval clipped to -100..100 points."""
    keys = ("n", "mean", "std", "ci_low", "ci_high")
    difference = PairedDifference(
        *(_nan(entry[key]) for key in keys), p_value=_nan(entry["p_value"])
    )
    return difference.readable(-100.0, 100.0)


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
        "two-sided paired t-test. Intervals are clipped to the metric's range (0-100 %, "
        f"differences ±100 points) and shown from {MIN_INTERVAL_N} seeds on (summary.json keeps "
        "them all). n/a: not shown, or undefined (a std or p over fewer than 2 seeds)."
    )
    timing = (
        f"Wall time of the runner: {summary.get('wall_time_s', math.nan):.1f} s "
        f"({summary.get('cells_computed', 0)} cell(s) computed, "
        f"{summary.get('cells_reused', 0)} reused; {summary['cell_time_s']:.1f} s of training "
        "and evaluation recorded by the cells)."
    )
    lines = [f"# Experiment: {summary['task']}, {metric} (%)", "", counts, "", legend, "", timing]
    if summary.get("protocol"):
        lines += ["", *_protocol_lines(summary["protocol"])]
    # the combination table's difference column: mce - baseline, or the one other variant's
    others = [name for name in variants if name != REFERENCE]
    treatment = "mce" if "mce" in others else (others[0] if len(others) == 1 else None)
    for setting, info in summary["settings"].items():
        rates = ", ".join(f"{m}={r:g}" for m, r in info["rates"].items())
        lines += ["", f"## Missing rates {rates} (`{setting}`)", ""]
        table = summary["scores"][setting]
        diffs = summary["differences"].get(setting, {})
        lines += _combination_table(table, diffs, variants, treatment)
        metric_tables = summary.get("metrics", {}).get(setting, {})
        metric_diffs = summary.get("metric_differences", {}).get(setting, {})
        for name, by_variant in metric_tables.items():
            lines += ["", f"### {name} (%)", ""]
            lines += _combination_table(by_variant, metric_diffs.get(name, {}), variants, treatment)
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
    if summary.get("paper"):
        lines += ["", *paper_markdown(summary["paper"])]
    files = (
        "Files: summary.json (all statistics), summary.csv, cells.csv (every cell's scores), "
        "cells/<variant>/<setting>/seed<k>/ (run folders)."
    )
    lines += ["", files, ""]
    return "\n".join(lines)


def _protocol_lines(protocol: Mapping[str, Any]) -> list[str]:
    """What the protocol ran, what the command line changed and what it left out."""
    lines = [f"Protocol `{protocol['name']}` (the paper's experiment) on task {protocol['task']}."]
    overrides = protocol.get("overrides") or {}
    if overrides:
        given = ", ".join(f"{name}={value}" for name, value in overrides.items())
        lines.append(f"Overridden on the command line: {given}.")
    else:
        lines.append("Nothing overridden: as the protocol defines it.")
    if protocol.get("lacking"):
        lines.append(
            f"Compared in the paper but not implemented here (not run): "
            f"{', '.join(protocol['lacking'])}."
        )
    lines += [f"Note: {note}" for note in protocol.get("notes", ())]
    return [line + "  " for line in lines]  # two spaces: a Markdown line break


def _combination_table(
    table: Mapping[str, Mapping[str, Any]],
    diffs: Mapping[str, Mapping[str, Any]],
    variants: list[str],
    treatment: str | None,
) -> list[str]:
    """The Markdown lines of one table: combinations (and average) x variants, with the
    ``treatment - baseline`` column where ``diffs`` has it; ``–`` where a cell has no value."""
    diff_name = f"{treatment} - {REFERENCE}"
    header = [f"{name}" for name in variants]
    show_diff = diff_name in diffs
    if show_diff:
        header.append(f"{treatment} − {REFERENCE}")
    lines = ["| combination | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    combos: list[str] = []
    for by_combo in table.values():
        combos += [combo for combo in by_combo if combo not in combos]
    for combo in combos:
        cells = [
            _summary_of(table[name][combo]).text() if combo in table.get(name, {}) else "–"
            for name in variants
        ]
        if show_diff:
            entry = diffs[diff_name].get(combo)
            cells.append(_difference_of(entry).text() if entry is not None else "–")
        label = f"**{combo}**" if combo == "average" else combo
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


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
    """Long format: kind score / difference / unimodal_head / upper_bound, one row each, then
    metric:<name> / metric_difference:<name> for each extra metric (if any)."""
    rows = []
    sources = (
        ("score", summary["scores"]),
        ("difference", summary["differences"]),
        ("unimodal_head", summary["unimodal_heads"]),
    )
    for kind, block in sources:
        for setting, by_variant in block.items():
            for name, by_key in by_variant.items():
                for key, entry in by_key.items():
                    row = {"kind": kind, "setting": setting, "variant": name}
                    row["combination"] = key
                    row.update({f: entry.get(f) for f in CSV_FIELDS[4:]})
                    rows.append(row)
    for setting, by_key in summary["upper_bounds"].items():
        for key, entry in by_key.items():
            row = {"kind": "upper_bound", "setting": setting, "variant": "", "combination": key}
            row.update({f: entry.get(f) for f in CSV_FIELDS[4:]})
            rows.append(row)
    for kind, block in (
        ("metric", summary.get("metrics", {})),
        ("metric_difference", summary.get("metric_differences", {})),
    ):
        for setting, by_metric in block.items():
            for metric, by_variant in by_metric.items():
                for name, by_key in by_variant.items():
                    for key, entry in by_key.items():
                        row = {"kind": f"{kind}:{metric}", "setting": setting}
                        row.update({"variant": name, "combination": key})
                        row.update({f: entry.get(f) for f in CSV_FIELDS[4:]})
                        rows.append(row)
    return rows


def write_summary(out: Path, summary: Mapping[str, Any]) -> None:
    """``summary.json``, ``summary.md``, ``summary.csv`` and ``cells.csv`` in ``out``, each
    written atomically."""
    write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    write_text(out / "summary.md", markdown(summary))
    write_csv(out / "summary.csv", CSV_FIELDS, csv_rows(summary))
    cells = ("setting", "variant", "seed", "combination", "score")
    write_csv(out / "cells.csv", cells, summary["raw"])
