"""The paper's experiments as protocols (``mce.experiment --protocol``): what each resolves to,
one cell of each on its task's fixture, the published values beside ours and the verdicts."""

from __future__ import annotations

import json

import pytest
from data.avmnist_fixture import write_avmnist_fixture
from data.brats_fixture import write_brats_fixture
from data.iemocap_fixture import write_iemocap_fixture
from data.nuscenes_fixture import write_nuscenes_fixture

from mce import experiment
from mce.experiment import cli, parse_spec
from mce.experiment.paper_check import compare
from mce.experiment.protocols import PROTOCOLS, get_protocol
from mce.experiment.published import published_table

SMALL = ["--epochs", "1", "--pretrain-steps", "4", "--pretrain-eval-every", "2", "--no-figures"]
SMALL += ["--no-progress", "--seeds", "0"]


def test_every_protocol_resolves_to_the_papers_grid():
    table5, _ = parse_spec(["--protocol", "table5"])
    assert table5.task == "iemocap" and table5.seeds == tuple(range(10))
    assert table5.variants == ("baseline", "mbt-sample", "redcore", "mce")
    assert table5.settings[0] == (0.2, 0.5, 0.8) and len(table5.settings) == 6
    assert table5.protocol["lacking"] == ["unimf"] and table5.upper_bounds == "complete"
    table4, _ = parse_spec(["--protocol", "table4"])
    assert table4.settings[-1] == (0.8, 0.8, 0.5, 0.2)  # (T1/T1c, Flair, T2): f
    assert table4.variants == ("baseline", "pmr", "mbt-sample", "passion", "mce")
    table3, _ = parse_spec(["--protocol", "table3"])
    assert table3.seeds == (125,) and table3.task == "nuscenes"
    table2, _ = parse_spec(["--protocol", "table2", "--task", "iemocap"])
    assert table2.settings == ((0.2, 0.5, 0.8),) and len(table2.variants) == 13
    nuscenes2, _ = parse_spec(["--protocol", "table2", "--task", "nuscenes"])
    assert nuscenes2.seeds == (125,)
    fig7, _ = parse_spec(["--protocol", "fig7"])
    assert fig7.task == "avmnist" and len(fig7.settings) == 10
    assert fig7.settings[0] == (0.0, 0.9) and fig7.settings[-1] == (0.0, 0.0)
    demo, _ = parse_spec(["--protocol", "fig7", "--task", "digits"])
    assert demo.variants == ("baseline", "mce") and demo.seeds == (0, 1, 2)
    assert set(PROTOCOLS) == {"table2", "table3", "table4", "table5", "fig7", "table8"}


def test_flags_given_win_and_are_recorded_as_overrides():
    spec, _ = parse_spec(
        ["--protocol", "table5", "--seeds", "0-2", "--epochs", "3", "--variants", "mce,baseline",
         "--upper-bounds", "available"]
    )  # fmt: skip
    assert spec.seeds == (0, 1, 2) and spec.overrides["epochs"] == 3
    assert spec.variants == ("mce", "baseline") and spec.upper_bounds == "available"
    overrides = spec.protocol["overrides"]
    assert overrides == {
        "epochs": 3, "variants": ["mce", "baseline"], "seeds": [0, 1, 2],
        "upper_bounds": "available",
    }  # fmt: skip
    untouched, _ = parse_spec(["--protocol", "table3"])
    assert untouched.protocol["overrides"] == {}


def test_a_protocol_on_another_task_is_one_clear_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_spec(["--protocol", "table4", "--task", "iemocap"])
    assert exit_info.value.code == 2
    assert "--protocol table4 runs on task brats, not 'iemocap'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown protocol 'table9'; known: table2"):
        get_protocol("table9")


def _run(tmp_path, argv):
    out = tmp_path / "experiment"
    assert experiment.main([*argv, *SMALL, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["name"] == argv[1] and summary["package_version"]
    recorded = json.loads((out / "experiment.json").read_text())
    assert recorded["protocol"]["name"] == argv[1]
    return summary, (out / "summary.md").read_text()


@pytest.mark.slow
def test_table5_runs_one_cell_on_the_iemocap_fixture_beside_the_paper(tmp_path):
    data = write_iemocap_fixture(tmp_path / "data")
    argv = ["--protocol", "table5", "--data-dir", str(data), "--variants", "mce,baseline"]
    summary, text = _run(tmp_path, [*argv, "--settings", "a", "--batch-size", "16"])
    paper = summary["paper"]
    cells = {(c["method"], c["letter"]): c for c in paper["cells"]}
    assert cells[("mce", "a")]["paper"]["mean"] == 60.93
    ours = cells[("mce", "a")]["ours"]
    assert ours["n"] == 1 and cells[("mce", "a")]["difference"] == pytest.approx(
        ours["mean"] - 60.93
    )
    assert cells[("redcore", "a")]["ours"] is None  # printed in the paper, not run here
    (claim,) = paper["claims"]
    assert claim["verdict"] == "cannot tell"
    assert any("not run" in reason for reason in claim["reasons"])
    assert "Beside the paper: table5" in text and "60.93 ± 1.39" in text
    assert "not implemented here (not run): unimf" in text
    assert "Overridden on the command line" in text


@pytest.mark.slow
def test_table4_runs_one_cell_on_the_brats_fixture(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = write_brats_fixture(tmp_path / "data", cases=6)
    argv = ["--protocol", "table4", "--data-dir", str(data), "--variants", "mce", "--settings", "f"]
    for option in ("crop=16", "base=4", "levels=3"):
        argv += ["--task-option", option]
    summary, _ = _run(tmp_path, argv)
    metrics = {c["metric"] for c in summary["paper"]["cells"] if c["ours"] is not None}
    assert metrics == {"dice_wt", "dice_tc", "dice_et"}
    assert {c["letter"] for c in summary["paper"]["cells"]} == {"f"}


@pytest.mark.slow
def test_table3_and_table2_run_one_cell_on_the_nuscenes_fixture(tmp_path):
    pytest.importorskip(
        "nuscenes", reason="the nuScenes task needs nuscenes-devkit (pip install '.[nuscenes]')"
    )
    data = write_nuscenes_fixture(tmp_path / "data", samples_per_scene=3, sweeps=1)
    options = {"image_height": 36, "image_width": 64, "cells": 16, "dim": 8, "radar_sweeps": 1}
    argv = ["--data-dir", str(data), "--settings", "a", "--variants", "mce"]
    for name, value in options.items():
        argv += ["--task-option", f"{name}={value}"]
    summary, _ = _run(tmp_path / "t3", ["--protocol", "table3", *argv])
    (cell,) = [c for c in summary["paper"]["cells"] if c["ours"] is not None]
    assert (cell["method"], cell["metric"], cell["paper"]["mean"]) == ("mce", "iou", 39.80)
    summary, _ = _run(tmp_path / "t2", ["--protocol", "table2", "--task", "nuscenes", *argv])
    assert summary["paper"]["table"] == "table2"


@pytest.mark.slow
def test_fig7_runs_on_the_avmnist_fixture_and_the_digits_demo_draws_the_figure(tmp_path):
    pytest.importorskip("matplotlib", reason="figures need matplotlib (pip install '.[report]')")
    data = write_avmnist_fixture(tmp_path / "data")
    argv = ["--protocol", "fig7", "--data-dir", str(data), "--variants", "mce,baseline"]
    summary, _ = _run(tmp_path / "avmnist", [*argv, "--settings", "0,0.5", "--batch-size", "8"])
    assert summary["paper"]["claims"][0]["pairs"][0]["other"] == "baseline"
    out = tmp_path / "digits"
    argv = ["--protocol", "fig7", "--task", "digits", "--epochs", "1", "--seeds", "0"]
    argv += ["--pretrain-steps", "4", "--pretrain-eval-every", "2", "--no-progress"]
    assert experiment.main([*argv, "--out", str(out)]) == 0
    assert (out / "fig_fig7.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["settings"]) == 4
    image = [summary["upper_bounds"][s]["image"]["mean"] for s in summary["settings"]]
    assert len(set(image)) == 1  # one image-only model for every setting (complete data)
    assert "fig_fig7" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_table8_measures_the_three_recipes_beside_the_paper(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "COST_ROUNDS", 1)
    assert experiment.main(["--protocol", "table8", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "costs.json").read_text())
    assert set(result["rows"]) == {"baseline", "mce-exact", "mce-mc200"}
    assert result["rows"]["baseline"]["ratio"] == 1.0
    assert all(row["time_ms"] > 0 and row["flops_g"] > 0 for row in result["rows"].values())
    text = (tmp_path / "summary.md").read_text()
    assert "1046.9" in text and "exact-sv-time" in text


def _summary(scores: dict[str, list[float]], letter_rates=(0.2, 0.5, 0.8)) -> dict:
    """A summary of one setting: variant -> average score per seed."""
    raw = [
        {"setting": "s", "variant": v, "seed": k, "combination": "average", "score": x}
        for v, values in scores.items()
        for k, x in enumerate(values)
    ]
    rates = dict(zip(("acoustic", "lexical", "visual"), letter_rates))
    return {
        "task": "iemocap",
        "spec": {"protocol": {"name": "table2"}},
        "settings": {"s": {"rates": rates, "seeds": list(range(len(raw)))}},
        "variants": {v: {} for v in scores},
        "raw": raw,
    }


@pytest.mark.parametrize(
    "shift, verdict",
    [(2.0, "supported"), (-2.0, "contradicted"), (0.0, "cannot tell")],
)
def test_a_claim_is_judged_by_the_paired_interval(shift, verdict):
    base = [55.0, 57.0, 54.0, 58.0, 56.0]
    noise = [0.3, -0.2, 0.1, -0.3, 0.2] if shift else [1.0, -1.5, 0.5, -0.8, 1.2]
    summary = _summary({"t2-h": base, "t2-i": [b + shift + e for b, e in zip(base, noise)]})
    claims = {c["id"]: c for c in compare(summary)["claims"]}
    assert claims["a-on-rce"]["verdict"] == verdict  # "i above h" (the paper's Table 2 text)
    assert claims["full-mce-highest"]["verdict"] == "cannot tell"  # mce not run


def test_one_seed_cannot_tell_and_says_why():
    summary = _summary({"t2-h": [55.0], "t2-i": [60.0]})
    claim = {c["id"]: c for c in compare(summary)["claims"]}["a-on-rce"]
    assert claim["verdict"] == "cannot tell"
    assert "fewer than 2 seeds: no interval" in claim["reasons"]


def test_no_protocol_or_no_published_table_gives_no_comparison():
    summary = _summary({"t2-h": [55.0]})
    assert compare({**summary, "spec": {"protocol": None}}) is None
    assert compare({**summary, "task": "digits"}) is None
    assert published_table("table2", "iemocap").setting((0.2, 0.5, 0.8)) == "a"
