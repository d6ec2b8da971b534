"""Figures of a run folder and of an experiment folder, rebuilt by `python -m mce.report`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from mce import experiment
from mce.experiment import ExperimentSpec, report, run_experiment, upper_bound_scores
from mce.report import MARKER, batch_view, build_report, main, read_log
from mce.train import run
from mce.training.config import HPARAM_NAMES
from mce.training.run import config_for

PNG = b"\x89PNG\r\n\x1a\n"
# the smallest unimodal upper-bound budget of the pretraining code in this tree
PRETRAIN = (
    {"pretrain_steps": 1, "pretrain_eval_every": 1}
    if "pretrain_steps" in HPARAM_NAMES
    else {"pretrain_epochs": 1}
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MCE, one training step, on the bundled digits (the baseline adds nothing to test)."""
    root = tmp_path_factory.mktemp("report")
    config = config_for(
        method="mce",
        epochs=1,
        batch_size=2048,
        progress=False,
        out=str(root / "run"),
        cache_dir=str(root / "cache"),
        **PRETRAIN,
    )
    run(config)
    return root / "run"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def test_every_figure_of_a_run_folder(tiny_run):
    figures = build_report(tiny_run)
    names = [path.name for path in figures]
    assert names == [
        "fig_scores.png",
        "fig_trajectories.png",
        "fig_capability.png",
        "fig_batch.png",
    ]
    assert all(_is_png(path) for path in figures)
    markdown = (tiny_run / "results.md").read_text()
    assert markdown.startswith("digits: accuracy")  # the run's own table is kept
    for name in names:
        assert f"]({name})" in markdown
    assert "Table 6 view: step 0 of mce/log.csv" in markdown
    assert "| Number | " in markdown and "| B_m | " in markdown
    build_report(tiny_run)  # rebuilding replaces the section, never appends a second one
    assert (tiny_run / "results.md").read_text().count(MARKER) == 1


def test_the_table6_view_reads_the_logged_counts(tiny_run):
    rows = read_log(tiny_run / "mce" / "log.csv")
    step, view = batch_view(rows, ("image", "audio"))
    assert step == rows[-1]["step"]
    results = json.loads((tiny_run / "results.json").read_text())
    training = results["missing_rates"]["training_samples"]
    # one batch holds the whole (masked) training split: counts are the present samples
    stated = results["missing_rates"]["stated"]
    for modality, rate in stated.items():
        assert view["count"][modality] == pytest.approx(training * (1 - rate), abs=1.0)
    assert set(view) == {"count", "U", "phi", "B"}
    with pytest.raises(ValueError, match="step 99 is not in the log"):
        batch_view(rows, ("image", "audio"), step=99)


def test_command_line(tiny_run, tmp_path, capsys):
    assert main([str(tiny_run), "--step", "0"]) == 0
    assert "fig_batch.png" in capsys.readouterr().out
    assert main([str(tmp_path)]) == 1
    assert "neither results.json" in capsys.readouterr().err


def _fake_run(config, resume=False, stop_at_step=None, *, task=None):
    """A finished run folder written at once: scores, heads, upper bounds and an MCE log."""
    out = Path(config.out)
    (out / config.method).mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"config": config.to_dict()}))
    scores = {"image": 40.0 + 3 * config.seed, "audio": 60.0, "image+audio": 70.0 - config.seed}
    scores["average"] = sum(scores.values()) / 3
    results = {
        "metric": "accuracy",
        "test_samples": 10,
        "scores": {config.method: scores},
        "unimodal_heads": {config.method: {"image": 30.0 + config.seed, "audio": 55.0}},
        "upper_bounds": {"image": {"heldout_utility": 0.8}, "audio": {"heldout_utility": 0.9}},
        "timing_s": {config.method: {"train": 0.1}},
    }
    (out / "results.json").write_text(json.dumps(results))
    header = "step,epoch,loss"
    if config.method == "mce":
        header += ",phi/image,U/image,B/image,count/image,phi/audio,U/audio,B/audio,count/audio"
    lines = [header]
    for step in range(30):
        row = f"{step},0,{1 / (step + 1):.3f}"
        if config.method == "mce":
            row += f",{step % 7},{20 + step % 3},0.1,25,{90 - step % 5},100,0.02,101"
        lines.append(row)
    (out / config.method / "log.csv").write_text("\n".join(lines) + "\n")
    return results["scores"]


def test_every_figure_of_an_experiment_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment.runner, "train_run", _fake_run)
    spec = ExperimentSpec(
        task="digits", variants=("mce", "baseline"), settings=((0.8, 0.2), (0.5, 0.5)), seeds=(0, 1)
    )
    run_experiment(spec, tmp_path, progress=False)  # builds the figures at the end
    names = sorted(path.name for path in tmp_path.glob("*.png"))
    assert names == sorted(
        [f"fig_{kind}-{setting}.png" for kind in ("scores", "trajectories", "capability")
         for setting in ("rates0.8-0.2", "rates0.5-0.5")] + ["fig_batch.png"]
    )  # fmt: skip
    assert all(_is_png(tmp_path / name) for name in names)
    markdown = (tmp_path / "summary.md").read_text()
    assert all(f"]({name})" in markdown for name in names)
    assert "Table 6 view: step 29 of mce, rates0.8-0.2, seed 0" in markdown
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["upper_bounds"]["rates0.8-0.2"]["image"]["mean"] == pytest.approx(80.0)
    # python -m mce.report rebuilds them from the folder alone
    for name in names:
        (tmp_path / name).unlink()
    assert sorted(path.name for path in build_report(tmp_path, step=3)) == names
    assert "Table 6 view: step 3 of" in (tmp_path / "summary.md").read_text()


def test_upper_bound_scores_are_read_defensively():
    assert upper_bound_scores({}) == {}
    assert upper_bound_scores({"upper_bounds": None}) == {}
    read = upper_bound_scores(
        {"upper_bounds": {"a": {"heldout_utility": 0.5}, "b": 72.0, "c": {"steps": 3}, "d": "x"}}
    )
    assert read == {"a": 50.0, "b": 72.0}


def test_validation_rows_do_not_count_as_training_steps(tmp_path):
    from mce.report import read_log

    log = tmp_path / "log.csv"
    log.write_text(
        "step,epoch,loss,B/image,validation/accuracy\n0,0,2.5,0.5,\n1,0,2.0,0.25,\n1,0,,,0.75\n"
    )
    rows = read_log(log)
    assert [row["step"] for row in rows] == [0.0, 1.0]
    assert rows[-1]["B/image"] == 0.25


def test_intervals_are_clipped_to_percent_and_left_out_below_three_values():
    wide = {"n": 3, "mean": 95.0, "ci_low": 70.0, "ci_high": 120.0}
    assert report._interval(wide) == (95.0, 70.0, 100.0)
    assert report._interval({**wide, "mean": 5.0, "ci_low": -20.0}) == (5.0, 0.0, 100.0)
    assert report._interval(wide, limits=None) == (95.0, 70.0, 120.0)
    mean, low, high = report._interval({"n": 2, "mean": 50.0, "ci_low": -80.0, "ci_high": 180.0})
    assert mean == 50.0 and math.isnan(low) and math.isnan(high)
    assert report._interval_note([wide, 70.0]) == ""
    assert report._interval_note([wide, {**wide, "n": 2}]) == "; n < 3: interval not shown"


def _errorbars(ax) -> list:
    from matplotlib.container import ErrorbarContainer

    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_score_bars_stay_within_0_100():
    entries = {
        "mce": [{"n": 5, "mean": 90.0, "ci_low": 60.0, "ci_high": 130.0}, 95.0],
        "baseline": [{"n": 5, "mean": 10.0, "ci_low": -40.0, "ci_high": 50.0}, None],
    }
    series = {k: [report._interval(entry) for entry in v] for k, v in entries.items()}
    ax = report.scores_figure(["a", "b"], series, "title", "accuracy (%)").axes[0]
    low, high = ax.get_ylim()
    assert 0.0 <= low and high <= 100.0
    assert len(_errorbars(ax)) == 2
    few = {"mce": [report._interval({"n": 2, "mean": 50.0, "ci_low": -80.0, "ci_high": 180.0})]}
    ax = report.scores_figure(["a"], few, "title", "accuracy (%)").axes[0]
    assert _errorbars(ax) == [] and ax.get_ylim()[1] <= 100.0


def test_experiment_figures_of_two_seeds_show_no_interval_and_say_so(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment.runner, "train_run", _fake_run)
    spec = ExperimentSpec(
        task="digits", variants=("mce", "baseline"), settings=((0.8, 0.2),), seeds=(0, 1)
    )
    run_experiment(spec, tmp_path, progress=False, figures=False)
    figures = []
    make = report._figure

    def recorded(width: float, height: float):
        figures.append(make(width, height))
        return figures[-1]

    monkeypatch.setattr(report, "_figure", recorded)
    build_report(tmp_path)
    titled = {
        fig.axes[0].get_title(): fig.axes[0]
        for fig in figures
        if fig.axes[0].get_title().startswith(("digits:", "Fig. 9"))
    }
    assert len(titled) == 2  # the scores and the capability figure
    for title, ax in titled.items():
        assert title.endswith("n < 3: interval not shown")
        assert _errorbars(ax) == []
        assert 0.0 <= ax.get_ylim()[0] and ax.get_ylim()[1] <= 100.0
