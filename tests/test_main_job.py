"""The main job (`python -m mce.train`, no arguments): MCE's mechanism acts at the bundled
default, the unimodal heads learn, and the run says what happened."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from mce.train import main, parse_config
from mce.training.activity import INACTIVE_RATES_WARNING, closing_lines, term_activity
from mce.training.loggers import read_log

FAST = ["--epochs", "2", "--pretrain-steps", "2", "--batch-size", "256", "--no-progress"]


@pytest.mark.slow
def test_the_default_run_exercises_every_term_and_trains_its_heads(tmp_path, capsys) -> None:
    assert main(["--out", str(tmp_path / "run"), "--no-progress", "--threads", "2"]) == 0
    printed = capsys.readouterr().out
    rows = read_log(tmp_path / "run" / "mce" / "log.csv")
    # 1,131 samples trained on (126 of the 1,257 held out to score each epoch): 9 steps x 30
    assert len(rows) == 300
    assert all(row["l_aux"] > 0 for row in rows)  # some samples keep both modalities
    for name in ("image", "audio"):
        assert sum(row[f"B/{name}"] > 0 for row in rows) >= len(rows) / 2
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    for name in ("image", "audio"):
        upper = 100.0 * results["upper_bounds"][name]["heldout_utility"]
        assert results["unimodal_heads"]["mce"][name] >= upper - 10.0, (name, results)
    assert "mce − baseline:" in printed and "one seed (0)" in printed
    assert "--settings 0.5,0.2 --seeds 0-9" in printed
    assert "L_aux 0 on 0 of 300 steps" in printed
    assert f"python -m mce.report {tmp_path / 'run'}" in printed
    assert f"tensorboard --logdir {tmp_path}" in printed


@pytest.mark.slow
def test_rates_where_no_sample_keeps_two_modalities_are_warned_of(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="mce.train"):
        assert main(FAST + ["--missing-rates", "0.8,0.2", "--out", str(tmp_path / "a")]) == 0
    assert INACTIVE_RATES_WARNING in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mce.train"):
        assert main(FAST + ["--method", "baseline", "--out", str(tmp_path / "b")]) == 0
    assert INACTIVE_RATES_WARNING not in caplog.text


def test_threads_flag(tmp_path, capsys) -> None:
    before = torch.get_num_threads()
    try:
        config, _ = parse_config(["--threads", "1"])
        assert config.threads == 1 and "threads" not in config.to_dict()
        assert main(FAST + ["--method", "baseline", "--threads", "1", "--out", str(tmp_path)]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert parse_config([])[0].threads >= 1  # the cores this process may use
    with pytest.raises(SystemExit):
        parse_config(["--threads", "0"])
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_term_activity_and_closing_lines() -> None:
    nan = float("nan")
    rows = [
        {"l_aux": 0.0, "l_single": 1.0, "B/x": 0.0, "B/y": 0.5, "loss": 1.0},
        {"l_aux": 0.2, "l_single": 0.0, "B/x": 0.0, "B/y": 0.1, "loss": 1.0},
        {"l_aux": 0.1, "l_single": 0.5, "B/x": 0.3, "B/y": nan, "loss": 1.0},
        {"l_aux": 0.1, "l_single": 0.5, "B/x": 0.3, "B/y": 0.2, "loss": 1.0},
    ]
    activity = term_activity(rows, ("x", "y"))
    assert activity.steps == 4 and activity.aux_zero == 0.25 and activity.single_zero == 0.25
    assert activity.b_zero == {"x": 0.5, "y": 0.0}
    scores = {"mce": {"average": 71.0}, "baseline": {"average": 72.5}}
    lines = closing_lines(scores, activity, task="digits", rates=(0.5, 0.2), seed=3, out="runs/a")
    assert lines[0].startswith("mce − baseline: -1.50 points on average, one seed (3)")
    assert "python -m mce.experiment --task digits --settings 0.5,0.2 --seeds 0-9" in lines[0]
    assert lines[1] == (
        "mce terms inactive at times: L_aux 0 on 1 of 4 steps; B/x 0 on 2 of 4 steps; "
        "L_single 0 on 1 of 4 steps (B/y 0 on 0 of 4 steps)"
    )
    assert "python -m mce.report runs/a" in lines[2] and "tensorboard --logdir runs" in lines[2]
    baseline_only = closing_lines(
        {"baseline": {"average": 1.0}}, None, task="t", rates=(0.1,), seed=0, out="o"
    )
    assert len(baseline_only) == 1 and baseline_only[0].startswith("next:")
    quiet = term_activity([{"l_aux": 0.1, "B/x": 0.2, "loss": 1.0}], ("x",))
    assert closing_lines({}, quiet, task="t", rates=(0.1,), seed=0, out="o")[0] == (
        "mce terms: every term acted on every step (L_aux 0 on 0 of 1 steps, B/x 0 on 0 of 1 steps)"
    )
