"""The training record: --select validation on a held-out share, early stopping (stops,
records, resumes exactly), validation per combination in TensorBoard, mixed precision on the
CPU, --threads for experiments and the reference models' progress bar."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch
from conftest import CUDA_PRESENT, CUDA_SKIP_REASON, validation_column

from mce.methods import METHODS, MethodInputs, get_method
from mce.science.lce import presence_counts
from mce.support.checkpoint import load_checkpoint
from mce.tasks import get_task
from mce.train import UsageError, config_for, main, run
from mce.training import trainer as trainer_module
from mce.training.config import TrainConfig
from mce.training.loggers import read_log
from mce.training.trainer import autocast

# 1,257 training samples, 126 held out: 1,131 trained on, 5 steps of 256 per epoch
BASE = dict(method="baseline", batch_size=256, progress=False, seed=3, validation_share=0.1)
RUNS = ("straight", "resumed")


def _validation(path) -> list[float]:
    return validation_column(path, "validation/accuracy")


@pytest.mark.slow
def test_select_validation_takes_the_held_out_share(tmp_path):
    scores = run(config_for(out=str(tmp_path), epochs=3, select="validation", **BASE))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["validation"]["source"] == "training share"
    logged = _validation(tmp_path / "baseline" / "log.csv")
    assert len(logged) == 3
    best = max(range(3), key=lambda e: (logged[e], -e))
    selection = results["selection"]
    assert selection["mode"] == "validation" and selection["metric"] == "accuracy"
    assert selection["best_epoch"] == {"baseline": best + 1}
    assert selection["validation_score"]["baseline"] == pytest.approx(100 * logged[best])
    checkpoint = load_checkpoint(tmp_path / "baseline" / "checkpoint.pt")
    assert checkpoint["best"]["epoch"] == best + 1 and checkpoint["best"]["model"] is not None
    assert results["scores"] == scores
    # TensorBoard: every combination and the average, in percent as on the console
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "baseline" / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    combos = {"image", "audio", "image+audio"}
    assert {f"validation/accuracy/{c}" for c in combos} | {"validation/accuracy"} <= tags
    average = [event.value for event in events.Scalars("validation/accuracy")]
    assert average == pytest.approx([100 * v for v in logged], abs=1e-3)
    per_combination = [
        [event.value for event in events.Scalars(f"validation/accuracy/{c}")] for c in combos
    ]
    assert all(0 <= v <= 100 for values in per_combination for v in values)
    means = [sum(values) / len(combos) for values in zip(*per_combination)]
    assert means == pytest.approx(average, abs=1e-3)  # the average is their unweighted mean


@pytest.mark.slow
def test_select_validation_with_a_share_on_the_command_line(tmp_path, capsys):
    argv = ["--method", "baseline", "--epochs", "1", "--batch-size", "512", "--no-progress"]
    out = tmp_path / "run"
    argv += ["--validation-share", "0.1", "--select", "validation", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["selection"]["best_epoch"] == {"baseline": 1}
    assert "tested epoch: the best validation accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        ({"select": "validation"}, "--select validation"),
        ({"early_stop": 2}, "--early-stop"),
        ({"early_stop": 2, "validation_share": 1e-4}, "--early-stop"),  # holds out no sample
    ],
)
def test_validation_without_a_split_is_refused(tmp_path, settings, flag):
    config = config_for(
        method="baseline", epochs=1, progress=False, out=str(tmp_path / "run"), **settings
    )
    with pytest.raises(UsageError, match=f"{flag} needs a validation split.*--validation-share"):
        run(config)
    assert not (tmp_path / "run").exists()


def test_early_stop_flag_is_checked(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--early-stop", "0"])
    assert exit_info.value.code == 2
    assert "--early-stop must be at least 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="early_stop must be a whole number of epochs >= 1"):
        TrainConfig(early_stop=0)


def _stopping(out) -> TrainConfig:
    # lr so small that the validation score stays put: no epoch after the first improves it
    return config_for(out=str(out), epochs=6, lr=1e-7, early_stop=2, **BASE)


@pytest.mark.slow
def test_early_stop_stops_records_and_resumes_exactly(tmp_path):
    expected = run(_stopping(tmp_path / "straight"))
    results = json.loads((tmp_path / "straight" / "results.json").read_text())
    logged = _validation(tmp_path / "straight" / "baseline" / "log.csv")
    # stopped after the first epoch that ends 2 epochs without a better score
    best, stopped = 0, None
    for epoch, score in enumerate(logged):
        if score > logged[best]:
            best = epoch
        elif epoch - best >= 2:
            stopped = epoch + 1
            break
    assert stopped is not None and stopped < 6 and len(logged) == stopped
    selection = results["selection"]
    assert selection["early_stop"] == 2 and selection["stopped_epoch"] == {"baseline": stopped}
    assert selection["best_epoch"] == {"baseline": stopped}  # --select last: the stopped epoch
    straight = load_checkpoint(tmp_path / "straight" / "baseline" / "checkpoint.pt")
    assert straight["stopped_epoch"] == stopped and straight["epoch"] == stopped
    assert "early stopping after 2 epoch(s)" in (tmp_path / "straight" / "results.md").read_text()

    resumed = _stopping(tmp_path / "resumed")
    assert run(resumed, stop_at_step=7) == {}  # inside epoch 2
    assert run(resumed, resume=True) == expected
    final = load_checkpoint(tmp_path / "resumed" / "baseline" / "checkpoint.pt")
    assert final["stopped_epoch"] == stopped and final["step"] == straight["step"]
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], final["model"][key]), key
    logs = [(tmp_path / n / "baseline" / "log.csv").read_text() for n in RUNS]
    assert logs[0] == logs[1]
    again = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert again["selection"] == selection

    # a run killed after the stop's checkpoint, before its results: resuming trains no more
    (tmp_path / "resumed" / "results.json").unlink()
    assert run(resumed, resume=True) == expected
    assert load_checkpoint(tmp_path / "resumed" / "baseline" / "checkpoint.pt")["step"] == (
        straight["step"]
    )


def _digits_step_inputs():
    """The digits task, a batch of 64 and the methods' inputs (a random upper-bound table)."""
    task = get_task("digits")
    train = task.splits(None).train
    batch = next(iter(train.batches(64, torch.arange(len(train)))))
    inputs = MethodInputs(
        loss=task.loss,
        utility=task.utility,
        counts=presence_counts(train.present, 2),
        dataset_size=len(train),
        seed=0,
        upper=torch.rand(len(train), 2, generator=torch.Generator().manual_seed(0)),
        batch_size=64,
        steps=10,
    )
    return task, batch, inputs


def _mce_step_inputs():
    task, batch, inputs = _digits_step_inputs()
    return task, batch, get_method("mce").build(inputs, task.options_for_method("mce"))


def _linear_output_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    """The dtypes the model's linear layers will output, recorded as it runs."""
    dtypes: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    return dtypes


def test_bf16_step_matches_float32_on_the_cpu():
    task, batch, method = _mce_step_inputs()
    device = torch.device("cpu")
    results = {}
    for precision in ("32", "bf16"):
        torch.manual_seed(0)
        model = task.build_model()
        dtypes = _linear_output_dtypes(model)
        with autocast(precision, device):
            result = method.step(model, batch, 0)
        expected = torch.bfloat16 if precision == "bf16" else torch.float32
        assert dtypes and set(dtypes) == {expected}, precision  # autocast really ran
        result.loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[precision] = (result.loss.detach().float(), grads)
    (loss32, grad32), (loss16, grad16) = results["32"], results["bf16"]
    assert torch.isfinite(loss16) and torch.isfinite(grad16).all()
    assert loss16 == pytest.approx(float(loss32), rel=3e-2) and loss16 != loss32
    cosine = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0)
    assert cosine > 0.98
    assert float(grad16.norm()) == pytest.approx(float(grad32.norm()), rel=0.1)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_steps_under_bf16_autocast(name):
    task, batch, inputs = _digits_step_inputs()
    spec, options = METHODS[name], task.options_for_method(name)
    torch.manual_seed(0)
    model = task.build_model()
    if spec.adapt_model is not None:
        model = spec.adapt_model(model, options)
    dtypes = _linear_output_dtypes(model)
    with autocast("bf16", torch.device("cpu")):
        result = spec.build(inputs, options).step(model, batch, 0)
    assert torch.bfloat16 in dtypes  # the method's forward ran under autocast
    result.loss.backward()
    assert torch.isfinite(result.loss.detach())
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
def test_bf16_run_trains_and_resumes_exactly(tmp_path, monkeypatch):
    precisions = []  # one entry each time a step enters the autocast context

    @contextlib.contextmanager
    def recorded(precision, device):
        with autocast(precision, device):
            precisions.append(precision)
            yield

    monkeypatch.setattr(trainer_module, "autocast", recorded)
    base = dict(method="mce", epochs=2, pretrain_steps=2, precision="bf16", seed=1)
    base.update(batch_size=256, progress=False)
    expected = run(config_for(out=str(tmp_path / "straight"), **base))
    rows = read_log(tmp_path / "straight" / "mce" / "log.csv")
    assert len(rows) == 10 and all(math.isfinite(row["loss"]) for row in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert precisions == ["bf16"] * 10  # each of the 10 training steps under bf16
    config = json.loads((tmp_path / "straight" / "config.json").read_text())["config"]
    assert config["precision"] == "bf16"
    resumed = config_for(out=str(tmp_path / "resumed"), **base)
    assert run(resumed, stop_at_step=4) == {}
    assert run(resumed, resume=True) == expected
    a, b = (load_checkpoint(tmp_path / n / "mce" / "checkpoint.pt") for n in RUNS)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    with pytest.raises(ValueError, match="differ from the run"):  # precision is recorded
        run(config_for(out=str(tmp_path / "straight"), **{**base, "precision": "32"}), resume=True)


def test_fp16_on_the_cpu_is_refused(capsys):
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA device.*use bf16"):
        config_for(precision="fp16")
    with pytest.raises(SystemExit) as exit_info:
        main(["--precision", "fp16"])
    assert exit_info.value.code == 2
    assert "--precision fp16 needs a CUDA device" in capsys.readouterr().err
    with pytest.raises(ValueError, match="precision must be one of 32, bf16, fp16"):
        TrainConfig(precision="16")


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_PRESENT, reason=CUDA_SKIP_REASON)
def test_fp16_step_on_cuda_scales_and_trains(tmp_path):
    config = config_for(
        method="mce",
        epochs=1,
        pretrain_steps=2,
        batch_size=256,
        precision="fp16",
        device="cuda",
        progress=False,
        out=str(tmp_path),
    )
    run(config)
    rows = read_log(tmp_path / "mce" / "log.csv")
    assert all(math.isfinite(row["loss"]) for row in rows)
    assert load_checkpoint(tmp_path / "mce" / "checkpoint.pt")["scaler"]["scale"] > 0


def test_experiment_threads_reach_every_cell(tmp_path, monkeypatch):
    from mce.experiment import cli, runner

    seen = []
    real_run = runner.train_run

    def spy(config, **kwargs):
        seen.append(config.threads)
        return real_run(config, **kwargs)

    monkeypatch.setattr(runner, "train_run", spy)
    before = torch.get_num_threads()
    argv = ["--variants", "baseline", "--seeds", "0", "--epochs", "1", "--batch-size", "512"]
    try:
        argv += ["--no-progress", "--no-figures", "--threads", "1", "--out", str(tmp_path)]
        assert cli.main(argv) == 0
        assert seen == [1] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_spec(["--threads", "0"])
    assert exit_info.value.code == 2


def test_reference_model_progress_bar_says_what_it_trains(tmp_path, monkeypatch):
    from mce.training import pretrain

    class Seen(Exception):
        pass

    def spy(*args, **kwargs):
        raise Seen(kwargs.get("desc"))

    monkeypatch.setattr(pretrain, "tqdm", spy)
    settings = dict(method="mce", epochs=1, pretrain_steps=2, batch_size=512, progress=False)
    with pytest.raises(Seen) as seen:  # the first reference model's bar: enough
        run(config_for(out=str(tmp_path), **settings))
    assert str(seen.value) == "training the frozen image-only reference model (once, cached)"
