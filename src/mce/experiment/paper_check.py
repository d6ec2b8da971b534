"""An experiment's measured cells beside the paper's published ones, and a verdict per claim.

For an experiment run with ``--protocol`` (its summary's ``spec.protocol``), :func:`compare`
finds the published table (:mod:`mce.experiment.published`), and for every (setting, method,
metric) that both have, puts the paper's value beside our mean, 95% CI and the difference
(ours - paper). For each claim the paper's text makes about the table it gives a verdict from our
seeds, paired by seed: for every (setting, compared method, metric) the claim covers, the paired
difference ``method - other`` of the combination average; the claim is *supported* when every
such difference has its 95% CI above 0, *contradicted* when any has its CI below 0, and *cannot
tell* otherwise (an interval that holds 0, a single seed, or a compared method not run). Fig. 7
names no compared methods: every other variant run is compared, on the image+audio combination.

The result is stored in ``summary.json`` (``paper``), with the published values used, so that
``python -m mce.report`` redraws it without the package's data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mce.experiment.published import Claim, PublishedTable, published_table
from mce.experiment.stats import paired_difference, summarize

__all__ = ["FIG7_COMBINATION", "VERDICTS", "compare", "markdown_lines"]

VERDICTS = ("supported", "contradicted", "cannot tell")
FIG7_COMBINATION = "image+audio"
"""The combination Fig. 7's claim is about (its middle panel)."""


def _table(protocol: Mapping[str, Any], task: str) -> PublishedTable | None:
    name = protocol.get("name")
    if name == "table2":
        return published_table("table2", task) if task in ("nuscenes", "iemocap") else None
    if name == "fig7":
        return published_table("fig7")  # a figure of AudioVisionMNIST: its claim, no values
    if name in ("table3", "table4", "table5"):
        table = published_table(name)
        return table if table.task == task else None
    return None


def _per_seed(
    summary: Mapping[str, Any], setting: str, variant: str, metric: str, combination: str
) -> dict[int, float]:
    """{seed: score} of one variant at one setting, for the task's main score (the table's only
    metric) or one of its extra metrics (``summary["metrics"]``)."""
    if metric in summary.get("metrics", {}).get(setting, {}):
        entry = summary["metrics"][setting][metric].get(variant, {}).get(combination)
        seeds = summary["settings"][setting]["seeds"]
        values = entry["values"] if entry else []
        return dict(zip(seeds, values)) if len(values) == len(seeds) else {}
    return {
        row["seed"]: row["score"]
        for row in summary["raw"]
        if row["setting"] == setting
        and row["variant"] == variant
        and row["combination"] == combination
    }


def _stats(values: Sequence[float]) -> dict[str, Any]:
    return summarize(list(values)).to_dict()


def _pair_verdict(difference: Mapping[str, Any]) -> str:
    low, high = difference.get("ci_low"), difference.get("ci_high")
    if difference.get("n", 0) < 2 or low is None or high is None:
        return "cannot tell"
    if any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return "cannot tell"
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "cannot tell"


def _claim_verdict(
    claim: Claim,
    summary: Mapping[str, Any],
    letters: Mapping[str, str],
    combination: str,
) -> dict[str, Any]:
    ran = set(summary["variants"])
    settings = [s for s, letter in letters.items() if claim.settings is None or letter in claim.settings]
    others = claim.others if claim.others is not None else tuple(v for v in ran if v != claim.method)
    pairs, missing = [], []
    for setting in settings:
        for metric in claim.metrics:
            for other in others:
                if claim.method not in ran or other not in ran:
                    missing.append(other if claim.method in ran else claim.method)
                    continue
                mine = _per_seed(summary, setting, claim.method, metric, combination)
                theirs = _per_seed(summary, setting, other, metric, combination)
                shared = sorted(set(mine) & set(theirs))
                difference = paired_difference(
                    [mine[s] for s in shared], [theirs[s] for s in shared]
                ).to_dict()
                pairs.append(
                    {
                        "setting": setting,
                        "letter": letters[setting],
                        "metric": metric,
                        "other": other,
                        "difference": difference,
                        "verdict": _pair_verdict(difference),
                    }
                )
    covered = {letters[s] for s in settings}
    uncovered = sorted(set(claim.settings or ()) - covered)
    verdicts = [pair["verdict"] for pair in pairs]
    if "contradicted" in verdicts:
        verdict = "contradicted"
    elif verdicts and all(v == "supported" for v in verdicts) and not missing and not uncovered:
        verdict = "supported"
    else:
        verdict = "cannot tell"
    reasons = []
    if missing:
        reasons.append(f"not run: {', '.join(sorted(set(missing)))}")
    if uncovered:
        reasons.append(f"settings not run: {', '.join(uncovered)}")
    if any(pair["difference"]["n"] < 2 for pair in pairs):
        reasons.append("fewer than 2 seeds: no interval")
    open_pairs = [
        p for p in pairs if p["verdict"] == "cannot tell" and p["difference"]["n"] >= 2
    ]
    if open_pairs:
        reasons.append(f"{len(open_pairs)} of {len(pairs)} differences have a CI holding 0")
    return {
        "id": claim.id,
        "kind": claim.kind,
        "text": claim.text,
        "line": claim.line,
        "method": claim.method,
        "value": claim.value,
        "holds_in_paper_tables": claim.holds_in_tables,
        "verdict": verdict,
        "reasons": reasons,
        "pairs": pairs,
    }


def compare(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The comparison with the paper of an experiment summary (see the module doc), or None
    when the experiment ran no protocol or the paper has no table of its task."""
    protocol = (summary.get("spec") or {}).get("protocol")
    if not protocol:
        return None
    table = _table(protocol, summary["task"])
    if table is None:
        return None
    letters: dict[str, str] = {}
    for setting, info in summary["settings"].items():
        rates = list(info["rates"].values())
        letter = table.setting(rates) if not table.figure else setting
        if letter is not None:
            letters[setting] = letter
    combination = FIG7_COMBINATION if table.name == "fig7" else "average"
    cells = []
    for setting, letter in letters.items():
        for method in table.methods:
            for metric in table.metrics:
                published = table.value(method, letter, metric)
                if published is None:
                    continue
                ours = _per_seed(summary, setting, method, metric, "average")
                stats = _stats(list(ours.values())) if ours else None
                cells.append(
                    {
                        "setting": setting,
                        "letter": letter,
                        "method": method,
                        "metric": metric,
                        "paper": {
                            "mean": published.mean,
                            "std": published.std,
                            "ci": list(published.ci) if published.ci else None,
                            "runs": published.runs,
                            "text": str(published),
                        },
                        "ours": stats,
                        "difference": stats["mean"] - published.mean if stats else None,
                    }
                )
    claims = [_claim_verdict(claim, summary, letters, combination) for claim in table.claims]
    return {
        "table": table.name,
        "caption": table.caption,
        "source": "Zhao, Zhang & Zou, Pattern Recognition 2025 (MCE), line "
        f"{table.line} of its text",
        "figure": table.figure,
        "combination": combination,
        "settings": letters,
        "cells": cells,
        "claims": claims,
        "notes": list(table.notes),
    }


def _number(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def markdown_lines(comparison: Mapping[str, Any]) -> list[str]:
    """The comparison as Markdown: the claims with their verdicts, then paper vs ours."""
    lines = [f"## Beside the paper: {comparison['table']}", "", comparison["caption"], ""]
    lines += ["### The paper's claims, tested on our seeds", ""]
    lines += ["| claim | paper's text | in the paper's own numbers | our runs | why |"]
    lines += ["|---|---|---|---|---|"]
    for claim in comparison["claims"]:
        own = {True: "holds", False: "does not hold", None: "no numbers"}[
            claim["holds_in_paper_tables"]
        ]
        bad = [
            f"{p['letter']}: {claim['method']} − {p['other']} {_number(p['difference']['mean'])}"
            for p in claim["pairs"]
            if p["verdict"] == "contradicted"
        ]
        why = "; ".join(claim["reasons"] + (["below 0 at " + ", ".join(bad)] if bad else []))
        text = claim["text"].replace("|", "/")
        lines.append(
            f"| {claim['id']} | {text} (line {claim['line']}) | {own} | **{claim['verdict']}** "
            f"| {why} |"
        )
    lines += [
        "",
        "Verdict: every paired difference (the claim's method − each compared method, by seed, "
        f"{comparison['combination']}) with its 95% CI above 0: supported; any below 0: "
        "contradicted; else cannot tell.",
    ]
    if comparison["cells"]:
        lines += ["", "### Published values beside ours", ""]
        lines += ["| setting | method | metric | paper | ours (mean [95% CI], n) | ours − paper |"]
        lines += ["|---|---|---|---|---|---|"]
        for cell in comparison["cells"]:
            ours = cell["ours"]
            text = (
                f"{_number(ours['mean'])} [{_number(ours['ci_low'])}, {_number(ours['ci_high'])}]"
                f", {ours['n']}"
                if ours
                else "not run"
            )
            lines.append(
                f"| {cell['letter']} | {cell['method']} | {cell['metric']} | "
                f"{cell['paper']['text']} | {text} | {_number(cell['difference'])} |"
            )
    for note in comparison["notes"]:
        lines += ["", f"Note: {note}"]
    return lines
