"""The experiment runner: a tiny grid on the bundled digits, reuse of finished cells, the
Table 2 set, and the command line."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import pytest

from mce import experiment
from mce.experiment import (
    ABLATIONS,
    VARIANTS,
    ExperimentSpec,
    cells_of,
    markdown,
    parse_spec,
    run_experiment,
)
from mce.experiment.stats import paired_difference, summarize
from mce.tasks import get_task
from mce.training.records import FIGURES_MARKER as MARKER

# 1 epoch of one step (the ~1,000 training samples fit one batch). lsub-only needs no unimodal
# upper bounds, so no pretraining: the grid runs in seconds.
TINY = {"epochs": 1, "batch_size": 2048}
SPEC = ExperimentSpec(
    task="digits",
    variants=("lsub-only", "baseline"),
    settings=((0.8, 0.2),),
    seeds=(0, 1),
    overrides=TINY,
)


@pytest.mark.slow
def test_grid_writes_the_table_and_reuses_finished_cells(tmp_path, monkeypatch):
    summary = run_experiment(SPEC, tmp_path, progress=False, figures=False)
    finished = sorted(tmp_path.glob("cells/*/*/*/results.json"))
    assert [str(p.parent.relative_to(tmp_path)) for p in finished] == [
        "cells/baseline/rates0.8-0.2/seed0",
        "cells/baseline/rates0.8-0.2/seed1",
        "cells/lsub-only/rates0.8-0.2/seed0",
        "cells/lsub-only/rates0.8-0.2/seed1",
    ]
    cell = json.loads((finished[2].parent / "config.json").read_text())["config"]
    assert cell["method"] == "mce" and cell["seed"] == 0 and cell["hparams"]["epochs"] == 1
    options = cell["method_options"]["mce"]
    assert (options["use_sub"], options["use_a"], options["use_b"]) == (
        True,
        False,
        False,
    )
    assert (summary["cells_computed"], summary["cells_reused"]) == (4, 0)
    assert summary["wall_time_s"] > 0
    average = summary["scores"]["rates0.8-0.2"]["lsub-only"]["average"]
    assert average["n"] == 2 and average["ci_low"] <= average["mean"] <= average["ci_high"]
    baseline = summary["scores"]["rates0.8-0.2"]["baseline"]["average"]
    diff = summary["differences"]["rates0.8-0.2"]["lsub-only - baseline"]["average"]
    gaps = [a - b for a, b in zip(average["values"], baseline["values"])]
    assert diff["mean"] == pytest.approx(sum(gaps) / 2)
    assert diff["replicates"] == ["seed0", "seed1"]
    assert set(summary["unimodal_heads"]["rates0.8-0.2"]["baseline"]) == {"image", "audio"}

    markdown = (tmp_path / "summary.md").read_text()
    assert "| combination | lsub-only | baseline | lsub-only − baseline |" in markdown
    assert "| **average** |" in markdown and "Wall time of the runner" in markdown
    with (tmp_path / "summary.csv").open() as file:
        rows = list(csv.DictReader(file))
    kinds = {(row["kind"], row["variant"], row["combination"]) for row in rows}
    assert ("score", "baseline", "image+audio") in kinds
    assert ("difference", "lsub-only - baseline", "average") in kinds
    with (tmp_path / "cells.csv").open() as file:
        assert len(list(csv.DictReader(file))) == 4 * 4  # cells x (3 combinations + average)

    # run again: nothing is trained, no cell file is rewritten
    stamps = {
        path: path.stat().st_mtime_ns for path in tmp_path.glob("cells/**/*") if path.is_file()
    }
    calls = []
    monkeypatch.setattr(experiment.runner, "train_run", lambda *args, **kwargs: calls.append(args))
    again = run_experiment(SPEC, tmp_path, progress=False, figures=False)
    assert calls == []
    assert (again["cells_computed"], again["cells_reused"]) == (0, 4)
    assert again["scores"] == summary["scores"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def _fake_run(calls):
    """A stand-in for mce.train.run that writes a finished run folder at once."""

    def fake(config, resume=False, stop_at_step=None, *, task=None):
        calls.append((config.method, config.seed))
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"config": config.to_dict()}))
        scores = {"image": 50.0 + config.seed, "audio": 60.0, "image+audio": 70.0}
        scores["average"] = sum(scores.values()) / 3
        results = {
            "metric": "accuracy",
            "test_samples": 10,
            "scores": {config.method: scores},
            "unimodal_heads": {config.method: {"image": 40.0, "audio": 45.0}},
            "timing_s": {config.method: {"train": 0.5}},
        }
        (out / "results.json").write_text(json.dumps(results))
        return results["scores"]

    return fake


def test_a_grown_grid_computes_only_the_new_cells(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(experiment.runner, "train_run", _fake_run(calls))
    run_experiment(SPEC, tmp_path, progress=False, figures=False)
    assert len(calls) == 4
    calls.clear()
    grown = dataclasses.replace(SPEC, seeds=(0, 1, 2))
    summary = run_experiment(grown, tmp_path, progress=False, figures=False)
    assert sorted(calls) == [("baseline", 2), ("mce", 2)]
    assert summary["scores"]["rates0.8-0.2"]["baseline"]["image"]["n"] == 3
    other = dataclasses.replace(SPEC, overrides={"epochs": 2})
    with pytest.raises(ValueError, match="other overrides"):
        run_experiment(other, tmp_path, progress=False, figures=False)


def test_table2_rows_follow_the_paper():
    # A, B, L_single, L_sub, L_aux of the paper's Table 2 rows a-m (row j: B on top of h, as
    # the paper's text describes it)
    expected = {
        "a": "00000", "b": "00100", "c": "00010", "d": "00001", "e": "00110", "f": "00101",
        "g": "00011", "h": "00111", "i": "10111", "j": "01111", "k": "11100", "l": "11001",
        "m": "11111",
    }  # fmt: skip
    rows = {}
    for name in ABLATIONS["table2"]:
        variant = VARIANTS[name]
        rows[variant.table2_row] = "".join(str(int(v)) for v in variant.components().values())
    assert rows == expected
    assert (VARIANTS["baseline"].table2_row, VARIANTS["mce"].table2_row) == ("a", "m")
    assert VARIANTS["lsub-only"].table2_row == "c" and VARIANTS["baseline"].method == "baseline"


def test_command_line_builds_the_spec():
    spec, args = parse_spec(
        ["--ablation", "table2", "--seeds", "0-2,7", "--epochs", "1", "--settings", "0.5,0.5",
         "--set", "mc_k=7", "--no-figures"]
    )  # fmt: skip
    assert spec.variants == ABLATIONS["table2"] and spec.seeds == (0, 1, 2, 7)
    assert spec.settings == ((0.5, 0.5),) and spec.overrides == {"epochs": 1, "mc_k": 7}
    assert args.no_figures
    default, _ = parse_spec([])
    assert default.variants == ("mce", "baseline") and default.seeds == (0, 1, 2)
    for bad in (["--variants", "nope"], ["--seeds", "x"], ["--set", "epochs=2"],
                ["--settings", "0.5"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parse_spec(bad)


def test_progress_lines_per_cell(tmp_path, monkeypatch, capsys):
    calls: list = []
    fake = _fake_run(calls)

    def logging_run(config, resume=False, stop_at_step=None, *, task=None):
        logging.getLogger("mce.train").info("epoch 1/1 of seed %d", config.seed)
        return fake(config, resume, stop_at_step, task=task)

    monkeypatch.setattr(experiment.runner, "train_run", logging_run)
    run_experiment(SPEC, tmp_path / "quiet", progress=False, figures=False)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4  # --no-progress: one line per cell, its result
    assert lines[0].startswith("cell 1/4 lsub-only rates0.8-0.2 seed0: accuracy average ")
    assert " % (" in lines[0]
    assert lines[0].endswith(" s)") and "epoch" not in "".join(lines)

    run_experiment(SPEC, tmp_path / "shown", progress=True, figures=False)
    err = capsys.readouterr().err
    assert "cell 2/4 baseline rates0.8-0.2 seed0: started" in err
    assert "INFO mce.train: epoch 1/1 of seed 1" in err  # the run's log lines, let through
    assert "cell 4/4 baseline rates0.8-0.2 seed1: accuracy average" in err
    logger = logging.getLogger("mce")
    assert logger.propagate and not any(
        isinstance(handler, experiment.runner._TqdmHandler) for handler in logger.handlers
    )


@pytest.mark.slow
def test_the_command_line_prints_the_summary_without_image_links(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "experiment"
    argv = ["--epochs", "1", "--batch-size", "2048", "--variants", "lsub-only,baseline",
            "--seeds", "0,1", "--out", str(out), "--no-progress"]  # fmt: skip
    assert experiment.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| combination | lsub-only | baseline |" in printed
    assert "![" not in printed and MARKER not in printed
    assert "![fig_scores-" in (out / "summary.md").read_text()  # the file keeps its figures


def _error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_spec(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("python -m mce.experiment: error: ")
    assert "--help" in lines[1]
    return lines[0]


def test_errors_are_one_line_naming_the_flags(capsys):
    preset = _error(["--settings", "a"], capsys)
    assert "presets a, b, c, d, e, f" in preset and "three modalities" in preset
    assert "task 'digits' has 2 (image, audio)" in preset
    assert "1 missing rate(s) given for the 2 modalities" in _error(["--settings", "0.5"], capsys)
    assert "--epochs must be at least 1" in _error(["--epochs", "0"], capsys)
    assert "--folds" in _error(["--folds", "2"], capsys)
    assert "unrecognized arguments: --bogus" in _error(["--bogus"], capsys)


def test_infeasible_rates_name_the_drop_all_missing_flag(tmp_path, capsys):
    argv = ["--settings", "0.8,0.8", "--epochs", "1", "--batch-size", "2048", "--variants",
            "baseline", "--seeds", "0", "--out", str(tmp_path), "--no-progress",
            "--no-figures"]  # fmt: skip
    assert experiment.main(argv) == 1
    err = capsys.readouterr().err
    assert "python -m mce.experiment: error: missing rates" in err
    assert "--drop-all-missing" in err and "drop_all_missing=True" not in err
    spec, _ = parse_spec([*argv, "--drop-all-missing"])
    assert spec.drop_all_missing and spec.to_dict()["drop_all_missing"]
    assert cells_of(spec, get_task("digits"))[0].config(spec, tmp_path).drop_all_missing


VARIANT_PAIR = ("mce", "baseline")


def test_summary_markdown_clips_intervals_and_leaves_them_out_under_three_seeds():
    def entry(values):
        return {**summarize(values).to_dict(), "values": values}

    def difference(a, b):
        return {**paired_difference(a, b).to_dict(), "replicates": [0, 1, 2][: len(a)]}

    def summary(mce, baseline):
        return {
            "task": "digits",
            "metric": "accuracy",
            "seeds": list(range(len(mce))),
            "test_samples": 10,
            "cell_time_s": 1.0,
            "variants": {name: {"components": {}, "table2_row": None} for name in VARIANT_PAIR},
            "settings": {"s": {"rates": {"image": 0.5, "audio": 0.2}}},
            "scores": {
                "s": {"mce": {"average": entry(mce)}, "baseline": {"average": entry(baseline)}}
            },
            "differences": {"s": {"mce - baseline": {"average": difference(mce, baseline)}}},
        }

    two_seeds = markdown(summary([10.0, 90.0], [5.0, 95.0]))
    assert "| **average** | 50.00 ± 56.57 [n/a, n/a] | 50.00 ± 63.64 [n/a, n/a] |" in two_seeds
    three_seeds = markdown(summary([99.0, 100.0, 100.0], [90.0, 91.0, 95.0]))
    top = summarize([99.0, 100.0, 100.0])
    assert f"99.67 ± 0.58 [{top.ci_low:.2f}, 100.00]" in three_seeds
    assert "shown from 3 seeds on" in three_seeds
