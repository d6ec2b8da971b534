"""`python -m mce.report RUN_DIR`: figures of a run folder or an experiment folder (PNG, next to
the results, linked from ``results.md`` / ``summary.md``), rebuilt from the files alone.

Figures:
    scores: grouped bars per modality combination and method (mean with its 95% confidence
        interval, clipped to 0-100 %, in an experiment folder; single scores in a run folder).
        An interval over fewer than 3 seeds is not drawn, and the title says so.
    trajectories (Fig. 8 style): phi_m, U_m and B_m per modality over the training steps, from
        ``<method>/log.csv`` of each method that logged them (MCE with factor B).
    capability (Fig. 9 style): each unimodal head's test score per modality, per method, next to
        the score of the modality's upper-bound model (on the test split; on its held-out
        training samples in runs recorded before that) when ``results.json`` holds
        ``upper_bounds`` (else the heads only). Heads of a method without L_single are untrained
        and marked so.
    batch (Table 6 view): one training step of MCE: present count, U_m, phi_m and B_m per
        modality (default: the last step), as a figure and as a Markdown table.

Needs matplotlib (``pip install 'mce[report]'``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mce.experiment.grid import RESULTS
from mce.experiment.stats import MIN_INTERVAL_N
from mce.experiment.summary import SUMMARY, markdown, upper_bound_scores
from mce.support.checkpoint import disk_full_message, is_disk_full
from mce.training.loggers import read_log
from mce.training.records import FIGURES_MARKER
from mce.training.run_folder import write_text

__all__ = [
    "batch_view",
    "build_report",
    "main",
    "plot_batch",
    "plot_capability",
    "plot_scores",
    "plot_trajectories",
    "read_log",
    "scores_figure",
]

MARKER = FIGURES_MARKER
QUANTITIES = (("phi", "φ_m (batch Shapley value)"), ("U", "U_m (upper bound)"), ("B", "B_m"))
Interval = tuple[float, float, float]  # mean, CI low, CI high (NaN where undefined)
Limits = tuple[float, float] | None  # the y range of a metric (None: unbounded)
PERCENT: Limits = (0.0, 100.0)  # scores in %
FEW_NOTE = f"n < {MIN_INTERVAL_N}: interval not shown"
CAPABILITY_CAPTION = (
    "Each method's bar: its unimodal head for that modality (the task's read-out of the "
    "modality's encoder features, e.g. LayerNorm + linear on the digits; trained by L_single, "
    "'head untrained' where the method has no L_single) scored on the test samples. Hatched: "
    "the frozen unimodal upper-bound model (the same encoder and head trained on that modality "
    "alone) on the test samples that have the modality (held-out training samples in older "
    "runs)."
)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def batch_view(
    rows: Sequence[Mapping[str, float]], modalities: Sequence[str], step: int | None = None
) -> tuple[int, dict[str, dict[str, float]]]:
    """The Table 6 view of one logged training step.

    Args:
        rows: a method's ``log.csv`` rows (:func:`read_log`).
        modalities: modality names.
        step: the step to show; None: the last logged step.

    Returns:
        (step, {quantity: {modality: value}}) with quantities ``count`` (samples of the batch
        with the modality present), ``U``, ``phi``, ``B`` (NaN where the log lacks them).

    Raises:
        ValueError: no such step in the log.
    """
    if not rows:
        raise ValueError("the log is empty")
    row = rows[-1] if step is None else next((r for r in rows if r["step"] == step), None)
    if row is None:
        raise ValueError(f"step {step} is not in the log (steps 0-{int(rows[-1]['step'])})")
    view = {
        quantity: {m: row.get(f"{quantity}/{m}", math.nan) for m in modalities}
        for quantity in ("count", "U", "phi", "B")
    }
    return int(row["step"]), view


def _interval(entry: Mapping[str, Any] | float | None, limits: Limits = PERCENT) -> Interval:
    """(mean, low, high) of a score or a summary entry; the interval clipped to ``limits``
    (None: not clipped), NaN where undefined or where the entry has fewer than
    :data:`MIN_INTERVAL_N` values."""
    if entry is None:
        return (math.nan, math.nan, math.nan)
    if isinstance(entry, (int, float)):
        return (float(entry), math.nan, math.nan)
    mean, low, high = (
        math.nan if entry.get(key) is None else float(entry[key])
        for key in ("mean", "ci_low", "ci_high")
    )
    if _too_few(entry):
        return (mean, math.nan, math.nan)
    if limits is not None:
        low, high = max(low, limits[0]), min(high, limits[1])
    return (mean, low, high)


def _too_few(entry: Mapping[str, Any] | float | None) -> bool:
    """Whether ``entry`` is a summary of fewer than :data:`MIN_INTERVAL_N` values."""
    if not isinstance(entry, Mapping) or entry.get("n") is None:
        return False
    return entry["n"] < MIN_INTERVAL_N


def _interval_note(entries: Iterable[Mapping[str, Any] | float | None]) -> str:
    """:data:`FEW_NOTE` (with a leading "; ") when an entry's interval is left out, else ""."""
    return f"; {FEW_NOTE}" if any(_too_few(entry) for entry in entries) else ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


# --------------------------------------------------------------------------------------------
# Figures (object-oriented matplotlib: no pyplot state, no display needed)
# --------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _bars(
    ax,
    groups: Sequence[str],
    series: Mapping[str, Sequence[Interval]],
    hatches: Mapping[str, str] | None = None,
    limits: Limits = PERCENT,
) -> None:
    """Grouped bars with asymmetric CI error bars (none where the interval is NaN); the y axis
    within ``limits``."""
    count = max(len(series), 1)
    width = 0.8 / count
    colors = _colors(count)
    for i, (label, intervals) in enumerate(series.items()):
        xs = [g + (i - (count - 1) / 2) * width for g in range(len(groups))]
        means = [0.0 if math.isnan(m) else m for m, _, _ in intervals]
        ax.bar(
            xs,
            means,
            width,
            label=label,
            color=colors[i],
            hatch=(hatches or {}).get(label),
            edgecolor="black" if (hatches or {}).get(label) else None,
        )
        with_ci = [(x, m, lo, hi) for x, (m, lo, hi) in zip(xs, intervals) if not math.isnan(lo)]
        if with_ci:
            ax.errorbar(
                [x for x, *_ in with_ci],
                [m for _, m, _, _ in with_ci],
                yerr=[[m - lo for _, m, lo, _ in with_ci], [hi - m for _, m, _, hi in with_ci]],
                fmt="none",
                ecolor="black",
                capsize=3,
                linewidth=1,
            )
    ax.set_xticks(range(len(groups)), groups, rotation=20 if len(groups) > 4 else 0)
    if limits is not None:
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, limits[0]), min(high, limits[1]))
    if count > 4:  # beside the axes, where it hides no bar
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize="small")


def _colors(count: int) -> list:
    """One distinct colour per series (tab10 up to 10, tab20 beyond)."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]


def plot_scores(
    groups: Sequence[str],
    series: Mapping[str, Sequence[Interval]],
    path: Path,
    title: str,
    ylabel: str,
    limits: Limits = PERCENT,
) -> Path:
    """Grouped bars: one group per combination, one bar per method, CI whiskers; the y axis
    within ``limits`` (None: unbounded)."""
    scores_figure(groups, series, title, ylabel, limits).savefig(path, dpi=120)
    return path


def scores_figure(
    groups: Sequence[str],
    series: Mapping[str, Sequence[Interval]],
    title: str,
    ylabel: str,
    limits: Limits = PERCENT,
):
    """The matplotlib ``Figure`` of :func:`plot_scores`."""
    fig = _figure(max(6.0, 1.2 * len(groups) * max(1, len(series)) / 2 + 2), 4.0)
    ax = fig.add_subplot()
    _bars(ax, groups, series, limits=limits)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    return fig


def plot_fig7(summary: Mapping[str, Any], path: Path) -> Path | None:
    """The paper's Fig. 7 from an experiment of ``--protocol fig7``: accuracy against the share
    of training samples with audio (every image present), evaluated image-only (left) and
    image+audio (middle), one line per method (mean, 95% CI band from 3 seeds), the frozen
    image-only model as the reference line; right: image+audio over the seeds at the smallest
    audio share, a box per method. None when the summary has no image and audio settings."""
    shares = {
        setting: 1.0 - info["rates"]["audio"]
        for setting, info in summary["settings"].items()
        if set(info["rates"]) == {"image", "audio"} and info["rates"]["image"] == 0
    }
    if not shares:
        return None
    order = sorted(shares, key=shares.get)
    x = [100.0 * shares[s] for s in order]
    fig = _figure(14.0, 4.2)
    axes = fig.subplots(1, 3)
    for ax, combination, label in (
        (axes[0], "image", "evaluated Image Only"),
        (axes[1], "image+audio", "evaluated Image+Audio"),
    ):
        for variant in summary["variants"]:
            points = [
                _interval(summary["scores"][s].get(variant, {}).get(combination)) for s in order
            ]
            means = [p[0] for p in points]
            (line,) = ax.plot(x, means, marker="o", label=variant)
            low, high = [p[1] for p in points], [p[2] for p in points]
            if not all(math.isnan(v) for v in low):
                ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15)
        reference = [
            _interval(summary.get("upper_bounds", {}).get(s, {}).get("image"))[0] for s in order
        ]
        if not all(math.isnan(v) for v in reference):
            ax.plot(x, reference, "k--", label="image-only model")
        ax.set_title(label, fontsize="medium")
        ax.set_xlabel("training samples with audio (%)")
        ax.set_ylabel(f"{summary['metric']} (%)")
        ax.set_ylim(*PERCENT)
        ax.legend(fontsize="small")
    lowest = order[0]
    boxes = {
        variant: (summary["scores"][lowest].get(variant, {}).get("image+audio") or {}).get(
            "values", []
        )
        for variant in summary["variants"]
    }
    axes[2].boxplot(list(boxes.values()), tick_labels=list(boxes))
    axes[2].set_title(
        f"Image+Audio, audio in {100 * shares[lowest]:g}% of samples, "
        f"{len(summary['settings'][lowest]['seeds'])} seed(s)",
        fontsize="medium",
    )
    axes[2].set_ylabel(f"{summary['metric']} (%)")
    fig.suptitle(f"Fig. 7 protocol on {summary['task']}", fontsize="medium")
    fig.savefig(path, dpi=120)
    return path


def plot_trajectories(
    logs: Mapping[str, Sequence[Mapping[str, float]]],
    modalities: Sequence[str],
    path: Path,
    title: str,
) -> Path | None:
    """phi_m, U_m, B_m (rows) per modality (columns) over the steps, one line per method.
    None (nothing written) when no log holds them."""
    logs = {label: rows for label, rows in logs.items() if rows and f"B/{modalities[0]}" in rows[0]}
    if not logs:
        return None
    fig = _figure(3.6 * len(modalities), 7.5)
    axes = fig.subplots(len(QUANTITIES), len(modalities), squeeze=False, sharex=True)
    for col, modality in enumerate(modalities):
        for row, (quantity, label) in enumerate(QUANTITIES):
            ax = axes[row][col]
            for name, rows in logs.items():
                steps = [r["step"] for r in rows]
                values = [r.get(f"{quantity}/{modality}", math.nan) for r in rows]
                (line,) = ax.plot(steps, values, alpha=0.35, linewidth=0.8)
                window = max(1, len(values) // 25)
                if window > 1:
                    ax.plot(
                        steps, _moving_average(values, window), color=line.get_color(), label=name
                    )
                else:
                    line.set_alpha(1.0)
                    line.set_label(name)
            if row == 0:
                ax.set_title(modality)
            if col == 0:
                ax.set_ylabel(label)
            if row == len(QUANTITIES) - 1:
                ax.set_xlabel("training step")
    axes[0][0].legend(fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.savefig(path, dpi=120)
    return path


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1) : i + 1] if not math.isnan(v)]
        out.append(sum(part) / len(part) if part else math.nan)
    return out


def plot_capability(
    modalities: Sequence[str],
    heads: Mapping[str, Mapping[str, Any]],
    upper: Mapping[str, Any],
    path: Path,
    title: str,
    ylabel: str,
    limits: Limits = PERCENT,
) -> Path | None:
    """Per modality: each method's unimodal-head test score (with CI when given, from 3
    values) and the upper bound's score when known, with a caption saying what each
    bar measures. None when no method recorded head scores."""
    entries = {
        label: [scores.get(m) for m in modalities] for label, scores in heads.items() if scores
    }
    if not entries:
        return None
    hatches = {}
    if upper:
        entries["upper bound"] = [upper.get(m) for m in modalities]
        hatches["upper bound"] = "//"
    series = {
        label: [_interval(entry, limits) for entry in values] for label, values in entries.items()
    }
    fig = _figure(max(5.0, 2.2 * len(modalities) + 2), 4.0)
    ax = fig.add_subplot()
    _bars(ax, modalities, series, hatches, limits)
    ax.set_ylabel(ylabel)
    note = "" if upper else " (no upper-bound scores recorded)"
    note += _interval_note(entry for values in entries.values() for entry in values)
    ax.set_title(title + note, fontsize="medium")
    fig.supxlabel(CAPABILITY_CAPTION, fontsize="small", wrap=True)
    fig.savefig(path, dpi=120)
    return path


def plot_batch(view: Mapping[str, Mapping[str, float]], step: int, path: Path, title: str) -> Path:
    """Table 6 view: one panel per quantity (count, U, phi, B), one bar per modality."""
    labels = {"count": "present in batch", "U": "U_m", "phi": "φ_m", "B": "B_m"}
    fig = _figure(11.0, 3.2)
    axes = fig.subplots(1, len(view), squeeze=False)[0]
    for ax, (quantity, values) in zip(axes, view.items()):
        names = list(values)
        numbers = [0.0 if math.isnan(v) else v for v in values.values()]
        bars = ax.bar(names, numbers, color=[f"C{i}" for i in range(len(names))])
        ax.bar_label(bars, labels=[_number(v) for v in values.values()], fontsize="small")
        ax.set_title(labels.get(quantity, quantity))
        ax.axhline(0.0, color="black", linewidth=0.6)
    fig.suptitle(f"{title}, step {step}", fontsize="medium")
    fig.savefig(path, dpi=120)
    return path


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.0f}" if value == int(value) and abs(value) >= 1 else f"{value:.4f}"


def batch_markdown(view: Mapping[str, Mapping[str, float]], step: int, source: str) -> str:
    """The Table 6 view as a Markdown table."""
    modalities = list(next(iter(view.values())))
    names = {"count": "Number", "U": "U_m", "phi": "φ_m", "B": "B_m"}
    lines = [
        f"Table 6 view: step {step} of {source}",
        "",
        "| | " + " | ".join(modalities) + " |",
        "|---" * (len(modalities) + 1) + "|",
    ]
    for quantity, values in view.items():
        cells = " | ".join(_number(values[m]) for m in modalities)
        lines.append(f"| {names.get(quantity, quantity)} | {cells} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------


def _link_section(markdown_path: Path, figures: Sequence[Path], extra: str = "") -> None:
    """Replace the figures section (after :data:`MARKER`) of a Markdown file."""
    text = markdown_path.read_text() if markdown_path.is_file() else ""
    text = text.split(MARKER)[0].rstrip("\n")
    links = "\n\n".join(f"![{p.stem}]({p.name})" for p in figures)
    section = f"\n\n{MARKER}\n\n## Figures\n\n{links}\n"
    if extra:
        section += f"\n{extra}\n"
    write_text(markdown_path, text + section)


def _head_label(name: str, trains_heads: bool) -> str:
    return name if trains_heads else f"{name} (head untrained)"


def _run_report(folder: Path, step: int | None) -> list[Path]:
    results = json.loads((folder / RESULTS).read_text())
    config = results.get("config", {})
    modalities = list(results.get("missing_rates", {}).get("stated", {}))
    scores = results["scores"]
    metric = results.get("metric", "score")
    figures: list[Path] = []
    combos = list(next(iter(scores.values())))
    figures.append(
        plot_scores(
            combos,
            {m: [_interval(s.get(c)) for c in combos] for m, s in scores.items()},
            folder / "fig_scores.png",
            f"{results.get('task', '')}: {metric} per modality combination (one run, "
            f"seed {results.get('seed')})",
            f"{metric} (%)",
        )
    )
    logs = {
        m: read_log(folder / m / "log.csv") for m in scores if (folder / m / "log.csv").is_file()
    }
    if not modalities and logs:
        first = next(iter(logs.values()))
        modalities = [k.split("/", 1)[1] for k in (first[0] if first else {}) if k.startswith("A/")]
    trajectory = plot_trajectories(
        logs, modalities, folder / "fig_trajectories.png", "Fig. 8 style: over training"
    )
    figures += [trajectory] if trajectory else []
    # method options under "method_options", or (older files) under each method's name
    uses_single = config.get("method_options", config).get("mce", {}).get("use_single", True)
    heads = {
        _head_label(m, m == "mce" and uses_single): h
        for m, h in results.get("unimodal_heads", {}).items()
    }
    capability = plot_capability(
        modalities,
        heads,
        upper_bound_scores(results),
        folder / "fig_capability.png",
        "Fig. 9 style: unimodal capability",
        f"{metric} (%)",
    )
    figures += [capability] if capability else []
    extra = ""
    mce_log = logs.get("mce")
    if mce_log:
        chosen, view = batch_view(mce_log, modalities, step)
        figures.append(plot_batch(view, chosen, folder / "fig_batch.png", "Table 6 view (mce)"))
        extra = batch_markdown(view, chosen, "mce/log.csv")
    _link_section(folder / "results.md", figures, extra)
    return figures


def _experiment_report(folder: Path, step: int | None) -> list[Path]:
    summary = json.loads((folder / SUMMARY).read_text())
    # the tables again from summary.json (with the paper's values it recorded)
    write_text(folder / "summary.md", markdown(summary))
    metric = summary["metric"]
    figures: list[Path] = []
    cells = {(c["variant"], c["setting"], c["seed"]): folder / c["path"] for c in summary["cells"]}
    first_seed = summary["seeds"][0]
    extra = ""
    for setting, info in summary["settings"].items():
        modalities = list(info["rates"])
        rates = ", ".join(f"{m}={r:g}" for m, r in info["rates"].items())
        table = summary["scores"][setting]
        combos = list(next(iter(table.values())))
        note = _interval_note(table[v].get(c) for v in table for c in combos)
        figures.append(
            plot_scores(
                combos,
                {v: [_interval(table[v].get(c)) for c in combos] for v in table},
                folder / f"fig_scores-{_slug(setting)}.png",
                f"{summary['task']}: {metric}, missing rates {rates}; mean and 95% CI over "
                f"{len(info['seeds'])} seed(s){note}",
                f"{metric} (%)",
            )
        )
        logs = {}
        for variant in summary["variants"]:
            path = cells.get((variant, setting, first_seed))
            method = summary["variants"][variant]["method"]
            if path is not None and (path / method / "log.csv").is_file():
                logs[variant] = read_log(path / method / "log.csv")
        trajectory = plot_trajectories(
            logs,
            modalities,
            folder / f"fig_trajectories-{_slug(setting)}.png",
            f"Fig. 8 style: missing rates {rates}, seed {first_seed}",
        )
        figures += [trajectory] if trajectory else []
        heads = {
            _head_label(v, summary["variants"][v]["components"]["L_single"]): entry
            for v, entry in summary["unimodal_heads"].get(setting, {}).items()
        }
        capability = plot_capability(
            modalities,
            heads,
            summary.get("upper_bounds", {}).get(setting, {}),
            folder / f"fig_capability-{_slug(setting)}.png",
            f"Fig. 9 style: unimodal capability, missing rates {rates}",
            f"{metric} (%)",
        )
        figures += [capability] if capability else []
        if not extra:
            with_b = [v for v, rows in logs.items() if rows and f"B/{modalities[0]}" in rows[0]]
            source = "mce" if "mce" in with_b else next(iter(with_b), None)
            if source is not None:
                chosen, view = batch_view(logs[source], modalities, step)
                figures.append(
                    plot_batch(
                        view,
                        chosen,
                        folder / "fig_batch.png",
                        f"Table 6 view ({source}, {setting}, seed {first_seed})",
                    )
                )
                extra = batch_markdown(
                    view, chosen, f"{source}, {setting}, seed {first_seed} (log.csv)"
                )
    if (summary.get("protocol") or {}).get("name") == "fig7":
        drawn = plot_fig7(summary, folder / "fig_fig7.png")
        figures += [drawn] if drawn else []
    _link_section(folder / "summary.md", figures, extra)
    return figures


def build_report(folder: str | Path, step: int | None = None) -> list[Path]:
    """Write the figures of a run folder (``results.json``) or an experiment folder
    (``summary.json``) into it and link them from its Markdown file.

    Args:
        folder: the run or experiment folder.
        step: the training step of the Table 6 view (default: the last).

    Returns:
        The PNG files written.

    Raises:
        ValueError: the folder holds neither results.json nor summary.json, or ``step`` was
            not logged.
        ImportError: matplotlib is not installed.
    """
    folder = Path(folder)
    if (folder / SUMMARY).is_file():
        return _experiment_report(folder, step)
    if (folder / RESULTS).is_file():
        return _run_report(folder, step)
    raise ValueError(f"{folder} holds neither {RESULTS} (a run) nor {SUMMARY} (an experiment)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mce.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "folder",
        help="a run folder (python -m mce.train) or an experiment "
        "folder (python -m mce.experiment)",
    )
    parser.add_argument(
        "--step", type=int, default=None, help="training step of the Table 6 view (default: last)"
    )
    args = parser.parse_args(argv)
    try:
        figures = build_report(args.folder, args.step)
    except (ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as error:  # a full disk or an unwritable folder: one line
        if not (isinstance(error, OSError) or is_disk_full(error)):
            raise
        message = str(error)
        if is_disk_full(error):
            message = disk_full_message(Path(args.folder), "run it again")
        print(f"error: {message}", file=sys.stderr)
        return 1
    for path in figures:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
