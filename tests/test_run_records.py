"""Typed hyper-parameters, the task loader and what a run folder records."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch

import mce
from mce.tasks import get_task
from mce.train import config_for, main, parse_config, resolve_config, run
from mce.training.config import HyperParameters, TrainConfig

FAST = ["--epochs", "2", "--pretrain-steps", "2", "--batch-size", "256", "--no-progress"]


def test_every_hyper_parameter_is_settable_from_the_command_line():
    values = {
        "epochs": "3",
        "batch-size": "17",
        "optimizer": "sgd",
        "lr": "0.05",
        "weight-decay": "0.01",
        "momentum": "0.5",
        "lr-step": "2",
        "lr-gamma": "0.5",
        "lr-schedule": "poly",
        "lr-power": "0.5",
        "grad-clip": "0",
        "pretrain-steps": "4",
        "pretrain-eval-every": "2",
        "pretrain-patience": "3",
        "pretrain-holdout": "0.25",
        "missing-rates": "0.1,0.3",
    }
    assert {f.name.replace("_", "-") for f in dataclasses.fields(HyperParameters)} == set(values)
    argv = [item for name, value in values.items() for item in (f"--{name}", value)]
    config, _ = parse_config(argv)
    assert config.hparams == HyperParameters(
        epochs=3,
        batch_size=17,
        optimizer="sgd",
        lr=0.05,
        weight_decay=0.01,
        momentum=0.5,
        lr_step=2,
        lr_gamma=0.5,
        lr_schedule="poly",
        lr_power=0.5,
        grad_clip=0.0,
        pretrain_steps=4,
        pretrain_eval_every=2,
        pretrain_patience=3,
        pretrain_holdout=0.25,
        missing_rates=(0.1, 0.3),
    )


def test_unset_options_take_the_task_values():
    config, _ = parse_config(["--epochs", "2"])
    assert config.hparams == dataclasses.replace(get_task("digits").hparams, epochs=2)
    assert resolve_config(TrainConfig(task="digits")).hparams == get_task("digits").hparams
    assert config_for("avmnist", lr=0.1).hparams.epochs == 280


def test_help_shows_each_task_value(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "digits: 30; avmnist: 280" in text  # --epochs
    assert "digits: 0.5,0.2; avmnist: 0,0.8" in text  # --missing-rates
    assert "--lr-step" in text and "--grad-clip" in text and "--optimizer" in text


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown setting.*epoch\\b.*valid: .*epochs"):
        config_for("digits", epoch=3)
    with pytest.raises(ValueError, match="optimizer must be one of adam, adamw, sgd"):
        HyperParameters(optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr must be positive"):
        HyperParameters(lr=0.0)
    with pytest.raises(ValueError, match="epochs must be a whole number, got 2.5"):
        HyperParameters(epochs=2.5)
    with pytest.raises(ValueError, match="epochs must be a number, got '3'"):
        HyperParameters(epochs="3")
    with pytest.raises(ValueError, match="lr must be finite"):
        HyperParameters(lr=float("inf"))
    with pytest.raises(ValueError, match="missing_rates must be numbers"):
        HyperParameters(missing_rates="0.2,x")
    assert HyperParameters(missing_rates="0.2,0.5").missing_rates == (0.2, 0.5)
    assert HyperParameters(missing_rates="a").missing_rates == (0.2, 0.5, 0.8)
    assert HyperParameters(epochs=4.0).epochs == 4


@pytest.mark.slow
def test_config_json_holds_the_resolved_values(tmp_path):
    assert main(FAST + ["--method", "baseline", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "config.json").read_text())
    hparams = record["config"]["hparams"]
    assert hparams["epochs"] == 2 and hparams["batch_size"] == 256
    assert hparams["lr"] == 1e-3 and hparams["lr_step"] == 20  # the task's, resolved
    assert hparams["missing_rates"] == [0.5, 0.2]
    assert None not in hparams.values()
    assert record["config"]["task"] == "digits" and record["config"]["method"] == "baseline"
    assert record["mce_version"] == mce.__version__
    commit = record["git_commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit)


@pytest.mark.slow
def test_results_json_and_md_say_what_ran(tmp_path, capsys):
    assert main(FAST + ["--method", "mce", "--no-aux", "--no-a", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["task"] == "digits" and results["metric"] == "accuracy"
    assert results["unit"] == "%" and results["seed"] == 0
    assert results["methods"] == {"mce": "mce [no A, no L_aux]"}
    assert results["config"]["method_options"]["mce"]["use_aux"] is False
    rates = results["missing_rates"]
    assert rates["stated"] == {"image": 0.5, "audio": 0.2}
    kept = rates["training_samples"]
    # the training split: trained on, held out to score every epoch, or dropped
    assert kept + rates["validation_samples"] + rates["dropped_samples"] == 1257
    for rate in rates["actual"].values():
        assert 0.0 <= rate < 1.0 and abs(rate * kept - round(rate * kept)) < 1e-6
    assert set(results["timing_s"]["mce"]) == {"setup", "train", "evaluate"}
    assert "3 non-empty modality combinations" in results["average"]
    markdown = (tmp_path / "results.md").read_text()
    title = markdown.splitlines()[0]
    assert title.startswith("digits: accuracy (%) on every modality combination")
    assert title in printed and "| combination | mce [no A, no L_aux] (accuracy) |" in markdown
    assert "unweighted mean over the 3 non-empty modality combinations" in markdown
    average = results["scores"]["mce"]["average"]
    assert 1.0 < average <= 100.0  # percent, as in the table
    assert f"| **average** | {average:.2f} |" in markdown
    for name in ("image", "audio"):
        fit = results["upper_bounds"][name]
        assert 0.0 <= fit["heldout_utility"] <= 1.0 and 0.0 <= fit["training_utility"] <= 1.0
    assert "upper bounds (frozen unimodal models, accuracy %): image " in markdown
    assert "missing rates of the training split: stated image 0.5, audio 0.2; actual" in markdown


def test_resume_of_a_folder_without_a_run_is_an_error(tmp_path, capsys):
    assert main(FAST + ["--out", str(tmp_path / "empty"), "--resume"]) == 1
    assert "holds no run to resume" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "config.json").exists()


def test_module_attribute_task_loader(monkeypatch):
    module = types.ModuleType("user_tasks")
    module.TASK = get_task("digits")
    module.make_task = lambda: get_task("digits")
    module.NOT_A_TASK = 3
    monkeypatch.setitem(sys.modules, "user_tasks", module)
    assert get_task("user_tasks:TASK") is module.TASK
    assert get_task("user_tasks:make_task") is module.TASK
    with pytest.raises(ValueError, match="is a int, not an mce.tasks.Task"):
        get_task("user_tasks:NOT_A_TASK")
    with pytest.raises(ValueError, match="has no attribute 'MISSING'"):
        get_task("user_tasks:MISSING")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_here'"):
        get_task("no_such_module_here:TASK")
    with pytest.raises(ValueError, match="must be package.module:ATTRIBUTE"):
        get_task(":TASK")


def test_an_unknown_method_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'mcee'"):
        run(config_for(method="mcee", out=str(tmp_path / "run"), progress=False))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resume_names_what_differs_and_accepts_another_spelling_of_the_folder(tmp_path):
    settings = dict(method="baseline", epochs=1, batch_size=512, progress=False)
    run(config_for(out=f"{tmp_path}/run/", **settings))
    resumed = config_for(out=str(tmp_path / "run"), **settings)
    assert run(resumed, resume=True)  # already finished: evaluates and reports again
    changed = config_for(out=str(tmp_path / "run"), **{**settings, "seed": 3})
    with pytest.raises(ValueError, match=r"differ from the run in .*\(seed; see"):
        run(changed, resume=True)


def test_methods_get_their_options_by_name():
    config = config_for(mc_k=7)
    assert config.options_for("mce").mc_k == 7
    assert config.options_for("baseline") is None


@pytest.mark.slow
def test_infeasible_rates_are_an_error_unless_samples_may_be_dropped(tmp_path, capsys):
    argv = FAST + ["--method", "baseline", "--missing-rates", "0.6,0.6"]
    assert main(argv + ["--out", str(tmp_path / "exact")]) == 1
    assert "sum to 0.8 < 1" in capsys.readouterr().err
    assert not (tmp_path / "exact").exists()
    assert main(argv + ["--drop-all-missing", "--out", str(tmp_path / "dropped")]) == 0
    results = json.loads((tmp_path / "dropped" / "results.json").read_text())
    rates = results["missing_rates"]
    assert rates["drop_all_missing"] is True and rates["dropped_samples"] > 0
    assert rates["actual"]["image"] < 0.6 and rates["actual"]["audio"] < 0.6


@pytest.mark.parametrize("module", ["mce.train", "mce.experiment", "mce.report"])
def test_commands_start_without_import_warnings(module):
    import subprocess

    finished = subprocess.run(
        [sys.executable, "-W", "error", "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    assert "Warning" not in finished.stderr


def test_an_empty_split_is_named():
    from mce.tasks.base import Splits

    train, test = get_task("digits").splits(None).train, get_task("digits").splits(None).test
    with pytest.raises(ValueError, match="validation split holds no samples"):
        Splits.of((train, train.subset(torch.arange(0)), test))


def test_the_package_version_is_the_project_version() -> None:
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, flags=re.M)[1] == mce.__version__
