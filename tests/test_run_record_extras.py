"""Per-epoch validation on held-out training samples, run.log, re-running a recorded run
(--config), a quiet run(), and one-line command-line errors."""

from __future__ import annotations

import csv
import json
import logging

import pytest

from mce.train import config_for, main, run
from mce.training.cli import build_parser

FAST = ["--epochs", "2", "--batch-size", "256", "--no-progress", "--method", "baseline"]


def _validation_rows(path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return [row for row in csv.DictReader(file) if row.get("validation/accuracy")]


@pytest.mark.slow
def test_every_epoch_is_scored_on_held_out_training_samples(tmp_path, capsys, caplog):
    config = config_for(
        method="baseline",
        epochs=2,
        batch_size=256,
        out=str(tmp_path),
        progress=False,
        seed=1,
        validation_share=0.1,
    )
    handlers = list(logging.getLogger("mce").handlers)
    with caplog.at_level(logging.INFO, logger="mce"):
        scores = run(config)
    assert capsys.readouterr().out == ""  # run() prints nothing unless asked
    assert logging.getLogger("mce").handlers == handlers  # run.log's handler is removed
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["scores"] == scores
    held = results["validation"]["held_out_of_training"]
    trained = results["missing_rates"]["training_samples"]
    assert held == round(0.1 * (held + trained)) > 0
    assert results["missing_rates"]["validation_samples"] == held
    assert results["validation"]["source"] == "training share"
    assert results["selection"]["mode"] == "last"
    rows = _validation_rows(tmp_path / "baseline" / "log.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    epoch_lines = [r.message for r in caplog.records if "validation accuracy" in r.message]
    assert len(epoch_lines) == 2 and epoch_lines[0].startswith("baseline epoch 1/2")
    log_text = (tmp_path / "run.log").read_text()
    assert "baseline epoch 2/2: validation accuracy" in log_text
    assert "training split:" in log_text
    assert (tmp_path / "baseline" / "tb" / "hparams").is_dir()
    # the validation scores are TensorBoard scalars too, one per epoch, log.csv's in percent
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "baseline" / "tb"))
    events.Reload()
    scalars = events.Scalars("validation/accuracy")
    assert [event.step for event in scalars] == [int(row["step"]) for row in rows]
    assert [event.value for event in scalars] == pytest.approx(
        [100 * float(row["validation/accuracy"]) for row in rows], abs=1e-2
    )


@pytest.mark.slow
def test_validation_share_zero_trains_on_every_sample(tmp_path):
    config = config_for(
        method="baseline",
        epochs=1,
        batch_size=512,
        out=str(tmp_path),
        progress=False,
        validation_share=0.0,
    )
    run(config)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["validation"]["held_out_of_training"] == 0
    assert results["validation"]["samples"] == 0
    assert _validation_rows(tmp_path / "baseline" / "log.csv") == []


def test_the_flat_hparams_are_tensorboard_scalars():
    from mce.training.loggers import flat_hparams

    flat = flat_hparams({"a": {"b": (0.5, 0.2), "c": None}, "d": 3, "e": "x", "f": True})
    assert flat == {"a/b": "0.5,0.2", "a/c": "None", "d": 3, "e": "x", "f": True}


@pytest.mark.slow
def test_config_reruns_a_recorded_run(tmp_path, capsys):
    first, again, changed = tmp_path / "first", tmp_path / "again", tmp_path / "changed"
    assert main(FAST + ["--seed", "3", "--missing-rates", "0.3,0.1", "--out", str(first)]) == 0
    assert main(["--config", str(first / "config.json"), "--out", str(again), "--no-progress"]) == 0
    recorded = json.loads((first / "config.json").read_text())["config"]
    rerun = json.loads((again / "config.json").read_text())["config"]
    assert recorded.pop("out") == str(first) and rerun.pop("out") == str(again)
    assert rerun == recorded
    scores = [json.loads((p / "results.json").read_text())["scores"] for p in (first, again)]
    assert scores[0] == scores[1]
    # any other flag overrides its recorded value
    assert main(["--config", str(first), "--epochs", "1", "--out", str(changed)]) == 0
    overridden = json.loads((changed / "config.json").read_text())["config"]
    assert overridden["hparams"]["epochs"] == 1
    assert overridden["hparams"]["missing_rates"] == [0.3, 0.1]
    assert overridden["seed"] == 3 and overridden["method"] == "baseline"
    capsys.readouterr()
    # the recorded folder holds a run: it is not overwritten
    assert main(["--config", str(first), "--out", str(first)]) == 1
    assert "already holds a run" in capsys.readouterr().err


def test_config_that_is_no_run_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(tmp_path / "config.json")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m mce.train: error: --config:")


def test_usage_errors_are_one_line_without_the_usage_block(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--epochs", "0"])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "python -m mce.train: error: --epochs must be at least 1, got 0",
        "(python -m mce.train --help lists every option)",
    ]


def test_a_preset_on_a_two_modality_task_explains_the_presets(capsys):
    with pytest.raises(SystemExit):
        main(["--missing-rates", "a"])
    err = capsys.readouterr().err
    assert "usage:" not in err
    assert "rates for three modalities" in err and "--missing-rates 0.3,0.3" in err


def test_library_messages_name_the_flag(tmp_path, capsys):
    assert main(FAST + ["--missing-rates", "0.7,0.7", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--drop-all-missing" in err and "drop_all_missing" not in err


def test_validation_share_out_of_range_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--validation-share", "1"])
    assert "--validation-share must be in [0, 1)" in capsys.readouterr().err


def test_task_option_help_lists_every_task_options():
    text = " ".join(build_parser().format_help().split())
    assert "brats: crop=" in text and "digits: none" in text


def test_a_config_written_before_validation_share_held_nothing_out():
    from mce.training.records import config_differences

    config = config_for("digits", epochs=2, validation_share=0.1)
    saved = json.loads(json.dumps(config.to_dict()))
    del saved["validation_share"]
    assert config_differences(saved, config) == ["validation_share"]
    assert config_differences(saved, config_for("digits", epochs=2, validation_share=0.0)) == []


def test_an_invalid_run_setting_names_its_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--seed", "-1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("python -m mce.train: error: --seed must be")
