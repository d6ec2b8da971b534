"""The BraTS2020 task end to end: the CLI trains and evaluates on a folder in the real layout,
its presets, options, split and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data.brats_fixture import write_brats_fixture

from mce.tasks import get_task
from mce.tasks.brats import PRESETS, cache_dir_for, load
from mce.train import parse_config
from mce.training.run import config_for

SMALL = ["--task-option", "crop=16", "--task-option", "base=4", "--task-option", "levels=3"]


@pytest.fixture(scope="module")
def brats_dir(tmp_path_factory) -> Path:
    return write_brats_fixture(tmp_path_factory.mktemp("brats") / "data", cases=12)


@pytest.fixture
def cache_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.mark.slow
def test_cli_trains_and_evaluates_every_combination(brats_dir, tmp_path, cache_home) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "mce.train", "--task", "brats", "--data-dir", str(brats_dir),
        *SMALL, "--epochs", "1", "--pretrain-steps", "2", "--pretrain-eval-every", "2",
        "--missing-rates", "0.3,0.3,0.2,0", "--no-progress", "--out", str(out),
        "--shapley", "sampled", "--row-budget", "3",
    ]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "brats"
    for method in ("mce", "baseline"):
        scores = results["scores"][method]
        assert len(scores) == 16 and "t1+t1ce+flair+t2" in scores and "average" in scores
        assert all(0 <= value <= 100 for value in scores.values())
        assert set(results["metrics"][method]) == {
            "dice_wt", "dice_tc", "dice_et", "dice_et_post"
        }  # fmt: skip
    assert set(results["upper_bounds"]) == {"t1", "t1ce", "flair", "t2"}
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["task_options"] == {"crop": 16, "base": 4, "levels": 3, "head": "light"}
    assert config["hparams"]["lr_schedule"] == "poly"
    markdown = (out / "results.md").read_text()
    assert "dice_wt" in markdown and "t1+t1ce+flair+t2" in markdown
    assert (cache_dir_for(brats_dir) / "split.json").is_file()


def test_presets_give_t1_and_t1ce_one_rate(brats_dir) -> None:
    assert PRESETS["a"] == (0.2, 0.2, 0.5, 0.8)
    assert len(PRESETS) == 6 and all(rates[0] == rates[1] for rates in PRESETS.values())
    config, _ = parse_config(
        ["--task", "brats", "--data-dir", str(brats_dir), "--missing-rates", "d"]
    )
    assert config.hparams.missing_rates == (0.5, 0.5, 0.8, 0.2)
    assert get_task("brats").hparams.missing_rates == (0.8, 0.8, 0.5, 0.2)  # Fig. 9


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["crop=20"], "multiple of 2^(levels-1) = 16"),
        (["crop=16"], "at least 2 bottleneck voxels"),
        (["size=3"], "has no option size"),
        (["crop=big"], "must be a int"),
        (["crop"], "expected NAME=VALUE"),
    ],
)
def test_bad_task_options_are_named(brats_dir, capsys, options, message) -> None:
    argv = ["--task", "brats", "--data-dir", str(brats_dir)]
    for option in options:
        argv += ["--task-option", option]
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_split_is_saved_reused_and_scaled(brats_dir, cache_home) -> None:
    splits = load(brats_dir)
    train, validation, test = splits.train, splits.validation, splits.test
    assert (len(train), len(validation), len(test)) == (7, 2, 3)
    saved = json.loads((cache_dir_for(brats_dir) / "split.json").read_text())
    assert len(saved["train"]) == 7
    again = load(brats_dir)
    assert torch.equal(again.train.target, train.target)
    for split in (train, validation, test):
        assert split.inputs["t1"].dtype == torch.float16
        assert split.inputs["t1"].shape[1] == 1 and split.target.dtype == torch.uint8
        assert bool((split.present == 0b1111).all())
        assert split.inputs["flair"].shape[2:] == split.target.shape[1:]


def test_load_errors_are_named(tmp_path, cache_home) -> None:
    with pytest.raises(ValueError, match="needs --data-dir"):
        load(None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no case folder"):
        load(empty)
    broken = write_brats_fixture(tmp_path / "broken", cases=3)
    (broken / "BraTS20_Training_002" / "BraTS20_Training_002_t2.nii.gz").unlink()
    with pytest.raises(ValueError, match="BraTS20_Training_002.*t2"):
        load(broken)


def test_cli_names_a_broken_case(tmp_path, cache_home, capsys) -> None:
    broken = write_brats_fixture(tmp_path / "broken", cases=3)
    (broken / "BraTS20_Training_003" / "BraTS20_Training_003_seg.nii.gz").write_bytes(b"no")
    done = subprocess.run(
        [sys.executable, "-m", "mce.train", "--task", "brats", "--data-dir", str(broken),
         *SMALL, "--out", str(tmp_path / "run"), "--no-progress"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "XDG_CACHE_HOME": str(cache_home)},
    )  # fmt: skip
    assert done.returncode != 0
    assert "BraTS20_Training_003" in done.stderr and "seg" in done.stderr
    assert "Traceback" not in done.stderr





@pytest.mark.slow
def test_resume_equals_uninterrupted(brats_dir, tmp_path, cache_home, one_thread) -> None:
    """Crops draw from torch's RNG, which the checkpoint keeps: a stopped and resumed run ends
    with the same weights and results as an uninterrupted one."""
    from mce.support.checkpoint import load_checkpoint
    from mce.train import run

    base = dict(
        method="mce", data_dir=str(brats_dir), task_options={"crop": 16, "base": 4, "levels": 3},
        epochs=2, pretrain_steps=2, pretrain_eval_every=2, missing_rates=(0.3, 0.3, 0.2, 0.0),
        shapley="sampled", row_budget=3, progress=False, seed=3,
    )  # fmt: skip
    straight = config_for("brats", out=str(tmp_path / "straight"), **base)
    resumed = config_for("brats", out=str(tmp_path / "resumed"), **base)
    expected = run(straight)
    assert run(resumed, stop_at_step=9) == {}  # 7 training cases: inside epoch 2
    assert run(resumed, resume=True) == expected
    final_a = load_checkpoint(tmp_path / "straight" / "mce" / "checkpoint.pt")["model"]
    final_b = load_checkpoint(tmp_path / "resumed" / "mce" / "checkpoint.pt")["model"]
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key


def test_experiment_cells_carry_the_task_options(brats_dir, capsys) -> None:
    from mce.experiment.cli import parse_spec
    from mce.experiment.grid import cells_of

    argv = ["--task", "brats", "--data-dir", str(brats_dir), *SMALL, "--settings", "a"]
    spec, _ = parse_spec(argv)
    assert spec.task_options == {"crop": 16, "base": 4, "levels": 3, "head": "light"}
    config = cells_of(spec, get_task("brats", spec.task_options))[0].config(spec, Path("out"))
    assert config.task_options == spec.task_options
    assert config.hparams.missing_rates == (0.2, 0.2, 0.5, 0.8)
    with pytest.raises(SystemExit):
        parse_spec(["--task", "brats", "--task-option", "crop=20"])
    assert "multiple of 2^(levels-1)" in capsys.readouterr().err
