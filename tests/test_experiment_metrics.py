"""The experiment summary of a task's extra metrics (``results.json["metrics"]``): statistics
and paired differences like the primary score, in summary.json, summary.md and summary.csv."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from mce import experiment
from mce.experiment import ExperimentSpec, run_experiment

SETTING = "rates0.8-0.2"
SPEC = ExperimentSpec(
    task="digits", variants=("mce", "baseline"), settings=((0.8, 0.2),), seeds=(0, 1, 2)
)


def _f1(method: str, seed: int) -> dict[str, float]:
    image = 60.0 + 2 * seed if method == "mce" else 50.0 + seed**2
    table = {"image": image, "audio": 40.0, "image+audio": 70.0 + seed}
    table["average"] = sum(table.values()) / 3
    return table


def _fake_run(config, resume=False, stop_at_step=None, *, task=None):
    """A stand-in for mce.train.run that writes a finished run folder with extra metrics."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"config": config.to_dict()}))
    scores = {"image": 50.0 + config.seed, "audio": 60.0, "image+audio": 70.0}
    scores["average"] = sum(scores.values()) / 3
    uar = {combo: value - 5.0 for combo, value in scores.items()}
    results = {
        "metric": "accuracy",
        "test_samples": 10,
        "scores": {config.method: scores},
        "metrics": {config.method: {"f1": _f1(config.method, config.seed), "uar": uar}},
        "unimodal_heads": {config.method: {"image": 40.0, "audio": 45.0}},
        "timing_s": {config.method: {"train": 0.5}},
    }
    (out / "results.json").write_text(json.dumps(results))
    return results["scores"]


def _by_hand(values: list[float]) -> tuple[float, float, float, float]:
    n = len(values)
    mean = sum(values) / n
    std = statistics.stdev(values)
    half = scipy_stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def test_extra_metrics_are_summarised_like_the_score(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment.runner, "train_run", _fake_run)
    summary = run_experiment(SPEC, tmp_path, progress=False, figures=False)
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"] == summary["metrics"]
    assert list(summary["metrics"][SETTING]) == ["f1", "uar"]

    # f1 on "image": mce 60, 62, 64; baseline 50, 51, 54; paired differences 10, 11, 10
    mce = summary["metrics"][SETTING]["f1"]["mce"]["image"]
    baseline = summary["metrics"][SETTING]["f1"]["baseline"]["image"]
    diff = summary["metric_differences"][SETTING]["f1"]["mce - baseline"]["image"]
    assert mce["values"] == [60.0, 62.0, 64.0] and baseline["values"] == [50.0, 51.0, 54.0]
    for entry, values in ((mce, [60.0, 62.0, 64.0]), (baseline, [50.0, 51.0, 54.0])):
        mean, std, low, high = _by_hand(values)
        assert entry["n"] == 3
        assert (entry["mean"], entry["std"]) == (pytest.approx(mean), pytest.approx(std))
        assert (entry["ci_low"], entry["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    d_mean, d_std, d_low, d_high = _by_hand([10.0, 11.0, 10.0])
    t = d_mean / (d_std / math.sqrt(3))
    p_value = 2 * scipy_stats.t.sf(abs(t), 2)
    assert diff["n"] == 3 and diff["replicates"] == ["seed0", "seed1", "seed2"]
    assert diff["mean"] == pytest.approx(31 / 3) and diff["std"] == pytest.approx(d_std)
    assert (diff["ci_low"], diff["ci_high"]) == (pytest.approx(d_low), pytest.approx(d_high))
    assert diff["p_value"] == pytest.approx(p_value)
    # the primary score's statistics are untouched
    assert summary["scores"][SETTING]["mce"]["image"]["values"] == [50.0, 51.0, 52.0]

    markdown = (tmp_path / "summary.md").read_text()
    m_mean, m_std, m_low, m_high = _by_hand([60.0, 62.0, 64.0])
    b_mean, b_std, b_low, b_high = _by_hand([50.0, 51.0, 54.0])
    row = (
        f"| image | {m_mean:.2f} ± {m_std:.2f} [{m_low:.2f}, {m_high:.2f}] "
        f"| {b_mean:.2f} ± {b_std:.2f} [{b_low:.2f}, {b_high:.2f}] "
        f"| {d_mean:+.2f} [{d_low:.2f}, {d_high:.2f}], p={p_value:.3f} |"
    )
    header = "| combination | mce | baseline | mce − baseline |"
    main, f1, uar = (markdown.index(text) for text in (header, "### f1 (%)", "### uar (%)"))
    assert main < f1 < uar
    f1_table = markdown[f1:uar]
    assert header in f1_table and row in f1_table and "| **average** |" in f1_table
    assert markdown.count(header) == 3

    with (tmp_path / "summary.csv").open() as file:
        rows = list(csv.DictReader(file))
    kinds = [row["kind"] for row in rows]
    assert kinds.count("metric:f1") == kinds.count("metric:uar") == 2 * 4  # variants x combos
    assert kinds.count("metric_difference:f1") == kinds.count("metric_difference:uar") == 4
    assert {"score", "difference", "unimodal_head"} <= set(kinds)
    (f1_row,) = [
        r
        for r in rows
        if (r["kind"], r["variant"], r["combination"]) == ("metric:f1", "mce", "image")
    ]
    assert f1_row["setting"] == SETTING and f1_row["n"] == "3" and f1_row["p_value"] == ""
    assert float(f1_row["mean"]) == pytest.approx(62.0)
    assert float(f1_row["ci_low"]) == pytest.approx(m_low)
    (diff_row,) = [
        r
        for r in rows
        if (r["kind"], r["variant"], r["combination"])
        == ("metric_difference:f1", "mce - baseline", "image")
    ]
    assert float(diff_row["mean"]) == pytest.approx(31 / 3)
    assert float(diff_row["p_value"]) == pytest.approx(p_value)


def test_no_extra_metrics_no_metric_keys(tmp_path, monkeypatch):
    def plain(config, resume=False, stop_at_step=None, *, task=None):
        scores = _fake_run(config, resume, stop_at_step, task=task)
        path = Path(config.out) / "results.json"
        results = json.loads(path.read_text())
        results["metrics"] = {}
        path.write_text(json.dumps(results))
        return scores

    monkeypatch.setattr(experiment.runner, "train_run", plain)
    summary = run_experiment(SPEC, tmp_path, progress=False, figures=False)
    assert "metrics" not in summary and "metric_differences" not in summary
    assert "###" not in (tmp_path / "summary.md").read_text()
    assert "metric" not in (tmp_path / "summary.csv").read_text()
