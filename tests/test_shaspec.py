"""ShaSpec: the loss against a hand-written loop, the substitution of absent modalities by a
present one's shared feature (vector and dense models), the shared encoder's two kinds,
options, exact resume, and ``--method shaspec`` on every task's fixture."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from data.avmnist_fixture import write_avmnist_fixture
from data.brats_fixture import write_brats_fixture
from data.iemocap_fixture import write_iemocap_fixture
from data.nuscenes_fixture import write_nuscenes_fixture
from torch import nn

import mce
from mce.data.dataset import Batch
from mce.methods import METHODS, MethodInputs, ShaSpecConfig, ShaSpecMethod, get_method
from mce.methods.shaspec import adapt_model
from mce.nn.fusion import ConcatFusion
from mce.nn.model import MultimodalModel, combination_rows, full_rows
from mce.nn.shaspec import ChannelMLP, fresh_copy, same_architecture
from mce.support.checkpoint import load_checkpoint
from mce.tasks import get_task
from mce.tasks.brats import build_model as build_brats_model
from mce.train import config_for, main, parse_config, run
from mce.training.config import HPARAM_NAMES, TrainConfig, option_names

MODALITIES = ("a", "b", "c")
DIM = 4
SAME = (3, 3, 3)  # input widths: one architecture, a shared copy
MIXED = (3, 5, 2)  # different inputs: stems and a shared channel MLP


def small_model(widths=SAME, kind: str = "auto", seed: int = 0) -> MultimodalModel:
    """Three modalities, Linear + ReLU encoders to 4 features, ShaSpec's adaptation."""
    torch.manual_seed(seed)
    model = MultimodalModel(
        MODALITIES,
        encoders={
            name: nn.Sequential(nn.Linear(width, DIM), nn.ReLU())
            for name, width in zip(MODALITIES, widths)
        },
        heads={name: nn.Linear(DIM, 2) for name in MODALITIES},
        fusion=ConcatFusion(3, DIM),
        decoder=nn.Linear(3 * DIM, 2),
        reconstruction=None,
        dim=DIM,
    )
    return adapt_model(model, ShaSpecConfig(shaspec_shared_encoder=kind))


def small_batch(present: list[int], widths=SAME, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    num = len(present)
    inputs = {n: torch.randn(num, w, generator=generator) for n, w in zip(MODALITIES, widths)}
    target = torch.randint(0, 2, (num,), generator=generator)
    return Batch(inputs, target, torch.tensor(present), torch.arange(num))


def method_inputs(counts=(5, 5, 5)) -> MethodInputs:
    def loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, target, reduction="none")

    def utility(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (outputs.argmax(-1) == target).float()

    return MethodInputs(loss, utility, torch.tensor(counts), 10, 0)


# --------------------------------------------------------------------------------------------
# the loss, by hand
# --------------------------------------------------------------------------------------------


def _affine(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = range(layer.out_features)
    out = torch.stack([sum(layer.weight[i, k] * x[k] for k in range(x.numel())) for i in rows])
    return out if layer.bias is None else out + layer.bias


def _relu(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([v if v > 0 else v * 0 for v in x])


def _cross_entropy(logits: torch.Tensor, label: int) -> torch.Tensor:
    return torch.log(sum(torch.exp(v) for v in logits)) - logits[label]


def _by_hand(model, batch, shared_weight=0.1, domain_weight=0.02) -> dict[str, float]:
    """The ShaSpec loss from its formulas, one sample, pair and modality at a time."""
    parts = model.shaspec
    project = parts.compose.project.weight  # (C, 2 C): W of f = shared + W [shared; specific]
    task_losses, differences, domain_losses = [], [], []
    for n in range(len(batch.present)):
        mask = int(batch.present[n])
        have = [m for m in range(3) if (mask >> m) & 1]
        specific, shared, composed = {}, {}, {}
        for m in have:
            encoder = model.encoders[MODALITIES[m]]
            x = batch.inputs[MODALITIES[m]][n]
            specific[m] = _relu(_affine(encoder.specific[0], x))
            if encoder.stem is None:  # one more encoder of the same architecture
                shared[m] = _relu(_affine(parts.shared[0], x))
            else:  # the modality's stem, then the shared channel MLP
                stem = _relu(_affine(encoder.stem[0], x))
                shared[m] = _affine(parts.shared.second, _relu(_affine(parts.shared.first, stem)))
            joint = torch.cat([shared[m], specific[m]])
            residual = [sum(project[i, k] * joint[k] for k in range(2 * DIM)) for i in range(DIM)]
            residual = torch.stack(residual)
            composed[m] = shared[m] + residual
        tokens = [composed[m] if m in have else shared[have[0]] for m in range(3)]
        logits = _affine(model.decoder, torch.cat(tokens))
        task_losses.append(_cross_entropy(logits, int(batch.target[n])))
        for i in have:
            for j in have:
                if i < j:
                    gaps = [abs(shared[i][k] - shared[j][k]) for k in range(DIM)]
                    differences.append(sum(gaps) / DIM)
        for m in have:
            domain_losses.append(_cross_entropy(_affine(parts.domain, specific[m]), m))
    l_task = sum(task_losses) / len(task_losses)
    l_shared = sum(differences) / len(differences) if differences else 0.0
    l_domain = sum(domain_losses) / len(domain_losses)
    loss = l_task + shared_weight * l_shared + domain_weight * l_domain
    terms = {"l_task": l_task, "l_shared": l_shared, "l_domain": l_domain, "loss": loss}
    return {key: float(value) for key, value in terms.items()}


@pytest.mark.parametrize("widths", [SAME, MIXED], ids=["copy", "stems"])
@pytest.mark.parametrize(
    "present", [[0b001, 0b011, 0b110, 0b111, 0b101, 0b100, 0b111], [0b001, 0b010, 0b100, 0b001]]
)
def test_the_loss_equals_a_hand_written_loop(widths, present) -> None:
    model = small_model(widths)
    assert model.shaspec.stems == (widths == MIXED)
    batch = small_batch(present, widths)
    config = ShaSpecConfig(shaspec_shared_weight=0.3, shaspec_domain_weight=0.05)
    result = ShaSpecMethod(method_inputs(), config).step(model, batch, 0)
    with torch.no_grad():
        expected = _by_hand(model, batch, 0.3, 0.05)
    for key, value in expected.items():
        assert result.logs[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert result.loss.item() == pytest.approx(expected["loss"], rel=1e-5)
    if len(present) == 4:
        assert result.logs["l_shared"] == 0  # no sample has two modalities
    else:
        assert result.logs["l_shared"] > 0
    result.loss.backward()
    assert model.shaspec.domain.weight.grad.abs().sum() > 0
    assert model.shaspec.compose.project.weight.grad.abs().sum() > 0


def test_default_weights_and_absent_inputs() -> None:
    model = small_model()
    batch = small_batch([0b011, 0b101, 0b110, 0b111])
    logs = ShaSpecMethod(method_inputs()).step(model, batch, 0).logs
    expected = logs["l_task"] + 0.1 * logs["l_shared"] + 0.02 * logs["l_domain"]
    assert logs["loss"] == pytest.approx(expected, rel=1e-6)
    assert 0 <= logs["domain_acc"] <= 1
    # an absent modality's input is never read
    absent = {
        name: torch.where(((batch.present >> m) & 1).bool()[:, None], x, x + 50.0)
        for m, (name, x) in enumerate(batch.inputs.items())
    }
    again = ShaSpecMethod(method_inputs()).step(model, dataclasses.replace(batch, inputs=absent), 0)
    assert again.logs == logs


# --------------------------------------------------------------------------------------------
# the substitution
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("widths", [SAME, MIXED], ids=["copy", "stems"])
def test_absent_modalities_take_the_first_kept_modalitys_shared_feature(widths) -> None:
    model = small_model(widths).eval()
    batch = small_batch([0b001, 0b110, 0b111, 0b101, 0b011], widths)
    with torch.no_grad():
        h = model.encode(batch.inputs, batch.present)
        rows, _ = combination_rows(batch.present, range(1, 8))  # every kept subset S of A_n
        tokens, outputs = model.forward_rows(h, rows)
        for r, (n, kept) in enumerate(rows.tolist()):
            first = min(m for m in range(3) if (kept >> m) & 1)
            for m in range(3):
                x = batch.inputs[MODALITIES[m]][n : n + 1]
                own = model.encoders[MODALITIES[m]](x)[0]  # [composed; shared] of (n, m)
                if (kept >> m) & 1:
                    torch.testing.assert_close(tokens[r, m], own)
                    assert not torch.equal(own[:DIM], own[DIM:])  # composed, not shared
                else:
                    x = batch.inputs[MODALITIES[first]][n : n + 1]
                    shared = model.encoders[MODALITIES[first]](x)[0, DIM:]
                    torch.testing.assert_close(tokens[r, m, :DIM], shared)
        # the fusion reads the composed (or substituted) halves only
        torch.testing.assert_close(outputs, model.decoder.forward(tokens[:, :, :DIM].flatten(1)))
        # a unimodal head reads the composed half of its modality
        index, head = model.unimodal_outputs(h, batch.present)[1]
        torch.testing.assert_close(head, model.heads["b"].module(h[index, 1, :DIM]))


@pytest.mark.slow
def test_dense_substitution_at_the_bottleneck_and_skips_from_the_shared_encoder() -> None:
    torch.manual_seed(0)
    model = adapt_model(build_brats_model(crop=8, base=2, levels=3), None).eval()
    assert not model.shaspec.stems  # four 3D U-Net encoders: one more is the shared encoder
    generator = torch.Generator().manual_seed(1)
    names = ("t1", "t1ce", "flair", "t2")
    x = {n: torch.randn(2, 1, 8, 8, 8, generator=generator) for n in names}
    present = torch.tensor([0b1100, 0b1011])
    with torch.no_grad():
        h = model.encode(x, present)
        tokens, logits = model.forward_rows(h, full_rows(present))
        channels = model.shaspec.channels
        for n, mask in enumerate(present.tolist()):
            first = min(m for m in range(4) if (mask >> m) & 1)
            shared_first = model.shaspec.shared(x[names[first]][n : n + 1])
            for m in range(4):
                token = tokens[n, m].view(2 * channels, -1)  # channel-major (2 C, P)
                if (mask >> m) & 1:
                    own = model.encoders[names[m]](x[names[m]][n : n + 1])
                    torch.testing.assert_close(token, own[-1][0].flatten(1))
                    shared = model.shaspec.shared(x[names[m]][n : n + 1])
                    for level in range(2):  # the skips: the shared encoder's
                        torch.testing.assert_close(h.skips[level][n, m], shared[level][0])
                else:
                    torch.testing.assert_close(token[:channels], shared_first[-1][0].flatten(1))
    assert logits.shape == (2, 4, 8, 8, 8)
    assert model.dim == 2 * channels and model.channels[-1] == 2 * channels


# --------------------------------------------------------------------------------------------
# the shared encoder, the adaptation and the options
# --------------------------------------------------------------------------------------------


def test_the_shared_encoder_kind_follows_the_encoders() -> None:
    digits = get_task("digits").build_model()  # LeNet-5 on 8x8 images and 13x16 MFCC maps
    assert not same_architecture([digits.encoders[n] for n in digits.modalities])
    brats = build_brats_model(crop=8, base=2, levels=3)
    assert same_architecture([brats.encoders[n] for n in brats.modalities])
    torch.manual_seed(0)
    encoder = brats.encoders["t1"]
    copy = fresh_copy(encoder)
    for (name, a), (_, b) in zip(encoder.state_dict().items(), copy.state_dict().items()):
        assert a.shape == b.shape, name
    assert not torch.equal(encoder.stages[0][0].weight, copy.stages[0][0].weight)  # drawn anew
    model = adapt_model(get_task("digits").build_model(), None)
    assert isinstance(model.shaspec.shared, ChannelMLP) and model.dim == 128
    # the shared parts appear once in the state dict
    shared_keys = {key for key in model.state_dict() if key.startswith("shaspec.")}
    names = ("shared.first", "shared.second", "domain")
    expected = {f"shaspec.{name}.{kind}" for name in names for kind in ("weight", "bias")}
    assert shared_keys == {*expected, "shaspec.compose.project.weight"}
    assert not any(".parts." in key for key in model.state_dict())
    with pytest.raises(ValueError, match="'copy' needs encoders of one architecture"):
        adapt_model(get_task("digits").build_model(), ShaSpecConfig(shaspec_shared_encoder="copy"))
    forced = small_model(SAME, kind="stems")
    assert forced.shaspec.stems and forced.encoders["a"].stem is not None


def test_a_model_must_be_adapted_once() -> None:
    plain = MultimodalModel(
        ("a", "b"),
        {"a": nn.Linear(3, DIM), "b": nn.Linear(3, DIM)},
        {"a": nn.Linear(DIM, 2), "b": nn.Linear(DIM, 2)},
        ConcatFusion(2, DIM),
        nn.Linear(2 * DIM, 2),
        None,
        DIM,
    )
    batch = small_batch([1, 3])
    batch = dataclasses.replace(batch, inputs={k: v for k, v in batch.inputs.items() if k != "c"})
    with pytest.raises(ValueError, match="needs a model built by mce.methods.shaspec.adapt_model"):
        ShaSpecMethod(method_inputs((2, 1))).step(plain, batch, 0)
    adapt_model(plain, None)
    with pytest.raises(ValueError, match="adapted twice"):
        adapt_model(plain, None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shaspec_shared_weight": -0.1}, "shaspec_shared_weight must be a finite number >= 0"),
        ({"shaspec_shared_weight": float("nan")}, "shaspec_shared_weight must be a finite"),
        ({"shaspec_domain_weight": float("inf")}, "shaspec_domain_weight must be a finite"),
        ({"shaspec_domain_weight": True}, "shaspec_domain_weight must be a finite number"),
        ({"shaspec_domain_weight": "0.1"}, "shaspec_domain_weight must be a finite number"),
        ({"shaspec_shared_encoder": "both"}, "shaspec_shared_encoder must be one of auto, copy"),
    ],
)
def test_bad_options_are_named(options, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        ShaSpecConfig(**options)
    assert len(str(error.value).splitlines()) == 1


def test_bad_flags_exit_with_one_line(capsys) -> None:
    for flags, message in (
        (["--shaspec-shared-weight", "-1"], "shaspec_shared_weight must be a finite number >= 0"),
        (["--shaspec-shared-encoder", "one"], "invalid choice"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_config(["--method", "shaspec", *flags])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_options_are_routed_by_clash_free_names() -> None:
    own = {spec.name for spec in dataclasses.fields(TrainConfig)}
    methods = [set(option_names(spec.options)) for spec in METHODS.values() if spec.options]
    groups = [set(HPARAM_NAMES), *methods, own]
    assert sum(map(len, groups)) == len(set().union(*groups))
    config = config_for(method="shaspec", shaspec_domain_weight=0.5, kl_weight=0.01)
    shaspec = config.method_options["shaspec"]
    assert shaspec == ShaSpecConfig(shaspec_domain_weight=0.5)
    assert config.method_options["redcore"].kl_weight == 0.01
    argv = ["--method", "shaspec", "--shaspec-shared-weight", "0.2"]
    parsed, _ = parse_config([*argv, "--shaspec-shared-encoder", "stems"])
    assert parsed.method_options["shaspec"] == ShaSpecConfig(0.2, 0.02, "stems")
    assert get_method("shaspec").build(method_inputs(), shaspec).config is shaspec
    with pytest.raises(TypeError, match="shaspec options must be a ShaSpecConfig"):
        get_method("shaspec").build(method_inputs(), {"shaspec_shared_weight": 0.1})
    assert not METHODS["shaspec"].needs_upper_bounds(None)

    from mce.experiment.cli import parse_spec
    from mce.experiment.grid import cells_of

    spec, _ = parse_spec(["--variants", "baseline,shaspec", "--set", "shaspec_shared_weight=0.3"])
    cells = cells_of(spec, get_task("digits"))
    config = cells[1].config(spec, Path("out"))
    assert config.method == "shaspec"
    assert config.method_options["shaspec"].shaspec_shared_weight == 0.3


# --------------------------------------------------------------------------------------------
# training end to end, resume, and every task's fixture
# --------------------------------------------------------------------------------------------


def _scores(out) -> dict[str, float]:
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {"shaspec"}
    assert all(0 <= value <= 100 for value in results["scores"]["shaspec"].values())
    return results["scores"]["shaspec"]


@pytest.mark.slow
def test_cli_trains_shaspec_on_the_bundled_digits_and_mce_loads_it(tmp_path) -> None:
    argv = ["--method", "shaspec", "--epochs", "1", "--batch-size", "512", "--no-progress"]
    assert main([*argv, "--shaspec-domain-weight", "0.05", "--out", str(tmp_path)]) == 0
    assert set(_scores(tmp_path)) == {"image", "audio", "image+audio", "average"}
    header = (tmp_path / "shaspec" / "log.csv").read_text().splitlines()[0].split(",")
    for name in ("l_task", "l_shared", "l_domain", "domain_acc", "loss"):
        assert name in header
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert config["method_options"]["shaspec"]["shaspec_domain_weight"] == 0.05
    predictor = mce.load(tmp_path)
    assert predictor.method == "shaspec"
    test = get_task("digits").splits(None).test
    inputs = {name: test.inputs[name][:20] for name in predictor.modalities}
    both = predictor.predict(inputs, attribution=True)
    assert both.outputs.shape == (20, 10) and both.shapley.shape == (20, 2)
    only_image = torch.ones(20, dtype=torch.int64)
    alone = predictor.predict(inputs, only_image)
    changed = predictor.predict(dict(inputs, audio=inputs["audio"] + 5), only_image)
    assert torch.equal(alone.outputs, changed.outputs)  # the absent audio is not read




@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, one_thread) -> None:
    base = dict(method="shaspec", epochs=2, batch_size=256, seed=4, progress=False)
    expected = run(config_for(out=str(tmp_path / "straight"), **base))
    resumed = config_for(out=str(tmp_path / "resumed"), **base)
    # 1,055 training samples / 256 = 5 steps per epoch: stop inside epoch 0, then resume
    assert run(resumed, stop_at_step=4) == {}
    assert run(resumed, resume=True) == expected
    final_a = load_checkpoint(tmp_path / "straight" / "shaspec" / "checkpoint.pt")
    final_b = load_checkpoint(tmp_path / "resumed" / "shaspec" / "checkpoint.pt")
    assert final_a["model"].keys() == final_b["model"].keys()
    for key in final_a["model"]:
        assert torch.equal(final_a["model"][key], final_b["model"][key]), key
    logged = (tmp_path / "resumed" / "shaspec" / "log.csv").read_text().splitlines()
    assert logged == (tmp_path / "straight" / "shaspec" / "log.csv").read_text().splitlines()
    assert not math.isnan(float(logged[-1].split(",")[logged[0].split(",").index("loss")]))


@pytest.mark.slow
def test_cli_trains_shaspec_on_avmnist(tmp_path) -> None:
    write_avmnist_fixture(tmp_path / "data")
    argv = ["--task", "avmnist", "--data-dir", str(tmp_path / "data"), "--method", "shaspec"]
    argv += ["--epochs", "2", "--batch-size", "8", "--missing-rates", "0.2,0.5", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert set(_scores(tmp_path / "run")) == {"image", "audio", "image+audio", "average"}


@pytest.mark.slow
def test_cli_trains_shaspec_on_iemocap(tmp_path) -> None:
    data = write_iemocap_fixture(tmp_path / "data")
    argv = ["--task", "iemocap", "--data-dir", str(data), "--method", "shaspec"]
    argv += ["--missing-rates", "a", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert len(_scores(tmp_path / "run")) == 8  # 7 combinations and the average
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["metrics"]["shaspec"]) == {"uar", "f1"}


@pytest.mark.slow
def test_cli_trains_shaspec_on_brats(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = write_brats_fixture(tmp_path / "data", cases=6)
    argv = ["--task", "brats", "--data-dir", str(data), "--method", "shaspec"]
    argv += ["--task-option", "crop=16", "--task-option", "base=4", "--task-option", "levels=3"]
    argv += ["--epochs", "1", "--missing-rates", "0.3,0.3,0.2,0", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    scores = _scores(tmp_path / "run")
    assert len(scores) == 16 and "t1+t1ce+flair+t2" in scores


def test_cli_trains_shaspec_on_nuscenes(tmp_path) -> None:
    pytest.importorskip(
        "nuscenes", reason="the nuScenes task needs nuscenes-devkit (pip install '.[nuscenes]')"
    )
    data = write_nuscenes_fixture(tmp_path / "data", samples_per_scene=3, sweeps=1)
    options = {"image_height": 36, "image_width": 64, "cells": 16, "dim": 8, "radar_sweeps": 1}
    argv = ["--task", "nuscenes", "--data-dir", str(data), "--method", "shaspec"]
    for name, value in options.items():
        argv += ["--task-option", f"{name}={value}"]
    argv += ["--epochs", "1", "--missing-rates", "0.2,0.3,0.4", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    scores = _scores(tmp_path / "run")
    assert len(scores) == 8 and "camera+lidar+radar" in scores
