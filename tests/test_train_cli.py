"""The CLI end to end on the bundled data, exact resume, and bad arguments."""

from __future__ import annotations

import json

import pytest
import torch

from mce.support.checkpoint import load_checkpoint
from mce.train import config_for, main, run

FAST = ["--epochs", "2", "--pretrain-steps", "2", "--batch-size", "256", "--no-progress"]


@pytest.mark.slow
def test_cli_trains_both_methods_and_prints_the_table(tmp_path, capsys):
    assert main(FAST + ["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| combination | mce (accuracy) | baseline (accuracy) |" in printed
    results = json.loads((tmp_path / "results.json").read_text())["scores"]
    assert set(results) == {"mce", "baseline"}
    assert set(results["mce"]) == {"image", "audio", "image+audio", "average"}
    averages = [results["mce"][c] for c in ("image", "audio", "image+audio")]
    assert results["mce"]["average"] == pytest.approx(sum(averages) / 3)
    for name in ("mce", "baseline"):
        assert (tmp_path / name / "checkpoint.pt").is_file()
        assert (tmp_path / name / "log.csv").is_file()
        assert any((tmp_path / name / "tb").iterdir())
    assert (tmp_path / "masks.pt").is_file() and (tmp_path / "results.md").is_file()
    log = (tmp_path / "mce" / "log.csv").read_text().splitlines()
    assert "phi/image" in log[0] and "B/audio" in log[0]


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
    base = dict(method="mce", epochs=2, batch_size=256, pretrain_steps=2, seed=5, progress=False)
    straight = config_for(out=str(tmp_path / "straight"), **base)
    resumed = config_for(out=str(tmp_path / "resumed"), **base)
    expected = run(straight)
    # 1,055 training samples / 256 = 5 steps per epoch: stop inside epoch 0, then inside epoch 1.
    assert run(resumed, stop_at_step=3) == {}
    partial = load_checkpoint(tmp_path / "resumed" / "mce" / "checkpoint.pt")
    assert (partial["epoch"], partial["batch_in_epoch"], partial["step"]) == (0, 3, 3)
    assert run(resumed, resume=True, stop_at_step=7) == {}
    partial = load_checkpoint(tmp_path / "resumed" / "mce" / "checkpoint.pt")
    assert (partial["epoch"], partial["batch_in_epoch"], partial["step"]) == (1, 2, 7)
    assert run(resumed, resume=True) == expected
    final_a = load_checkpoint(tmp_path / "straight" / "mce" / "checkpoint.pt")
    final_b = load_checkpoint(tmp_path / "resumed" / "mce" / "checkpoint.pt")
    for key in final_a["model"]:
        assert torch.equal(final_a["model"][key], final_b["model"][key]), key
    logged = (tmp_path / "resumed" / "mce" / "log.csv").read_text().splitlines()
    assert logged == (tmp_path / "straight" / "mce" / "log.csv").read_text().splitlines()


@pytest.mark.slow
def test_an_existing_run_is_not_overwritten(tmp_path):
    config = config_for(
        method="baseline", epochs=1, batch_size=512, out=str(tmp_path), progress=False
    )
    run(config)
    before = (tmp_path / "baseline" / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="already holds a run: pass --resume"):
        run(config)
    assert (tmp_path / "baseline" / "checkpoint.pt").read_bytes() == before


@pytest.mark.slow
def test_upper_bounds_are_cached_and_reused(tmp_path, caplog):
    import logging

    base = dict(
        method="mce",
        epochs=1,
        batch_size=512,
        pretrain_steps=2,
        progress=False,
        cache_dir=str(tmp_path / "cache"),
    )
    with caplog.at_level(logging.INFO, logger="mce.training.pretrain"):
        run(config_for(out=str(tmp_path / "a"), **base))
        assert "trained and cached" in caplog.text and "reusing" not in caplog.text
        caplog.clear()
        run(config_for(out=str(tmp_path / "b"), **base))
        assert "reusing" in caplog.text and "trained and cached" not in caplog.text
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_resume_with_different_settings_is_refused(tmp_path):
    run(
        config_for(
            method="baseline", epochs=1, batch_size=512, out=str(tmp_path), progress=False
        )
    )
    with pytest.raises(ValueError, match="differ from the run"):
        run(
            config_for(
                method="baseline", epochs=1, batch_size=256, out=str(tmp_path), progress=False
            ),
            resume=True,
        )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--missing-rates", "0.2,1.5"], "outside"),
        (["--missing-rates", "0.2,0.3,0.4"], "3 missing rates given for 2 modalities"),
        (["--task", "avmnist"], "--data-dir is required"),
        (["--data-dir", "/nonexistent/folder"], "is not a directory"),
        (["--data-dir", "."], "uses bundled data and takes no --data-dir"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--shapley", "kernel"], "invalid choice"),
        (["--resume"], "--resume needs --out"),
        (["--shapley", "mc", "--weighting", "official"], "weighting"),
        (["--method", "nope"], "--method 'nope' is not a registered method"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--lambda-sub", "nan"], "lambda_sub must be a finite number >= 0"),
        (["--optimizer", "rmsprop"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--task",
        "--data-dir",
        "--missing-rates",
        "--method",
        "--shapley",
        "--mc-k",
        "--no-a",
        "--no-b",
        "--no-single",
        "--no-sub",
        "--no-aux",
        "--lambda-sub",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--device",
        "--out",
        "--resume",
    ):
        assert option in text


@pytest.mark.slow
def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(tmp_path, monkeypatch, caplog):
    import os
    import signal

    from mce.methods import BaselineMethod

    base = dict(method="baseline", epochs=2, batch_size=256, seed=2, progress=False)
    expected = run(config_for(out=str(tmp_path / "straight"), **base))

    original_step = BaselineMethod.step

    def step_then_ctrl_c(self, model, batch, step):
        result = original_step(self, model, batch, step)
        if step == 6:
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of step 6
        return result

    monkeypatch.setattr(BaselineMethod, "step", step_then_ctrl_c)
    interrupted = config_for(out=str(tmp_path / "interrupted"), **base)
    with pytest.raises(KeyboardInterrupt):
        run(interrupted)
    assert f"--out {tmp_path / 'interrupted'} --resume" in caplog.text
    state = load_checkpoint(tmp_path / "interrupted" / "baseline" / "checkpoint.pt")
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (1, 2, 7)
    monkeypatch.setattr(BaselineMethod, "step", original_step)
    assert run(interrupted, resume=True) == expected


def test_a_diverging_loss_stops_with_a_clear_error(tmp_path, monkeypatch, capsys):
    from mce.methods import BaselineMethod, StepResult

    def nan_step(self, model, batch, step):
        loss = model(batch.inputs, batch.present).sum() * float("nan")
        return StepResult(loss, {"loss": float("nan")})

    monkeypatch.setattr(BaselineMethod, "step", nan_step)
    code = main(["--method", "baseline", "--epochs", "1", "--out", str(tmp_path), "--no-progress"])
    assert code == 1
    assert "loss became nan at step 0" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_monte_carlo_and_ablation_runs(tmp_path):
    argv = ["--method", "mce", "--shapley", "mc", "--mc-k", "3", "--no-aux", "--no-a"]
    assert main(argv + FAST + ["--out", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert config["method_options"]["mce"]["shapley"] == "mc"
    assert config["method_options"]["mce"]["use_aux"] is False
    header = (tmp_path / "mce" / "log.csv").read_text().splitlines()[0]
    assert "l_aux" not in header and "l_sub" in header
