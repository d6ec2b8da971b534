"""PASSION: the loss against a loop written from the formulas (vector and dense models), the
preference gate and the beta update worked by hand, exact resume, options, and
``--method passion`` on every task's fixture."""

from __future__ import annotations

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

from mce.data.dataset import Batch
from mce.methods import METHODS, MethodInputs, PASSIONConfig, PASSIONMethod, get_method
from mce.methods.passion import (
    PreferenceWeights,
    class_maps,
    dense_prototype_terms,
    preference_gate,
)
from mce.nn.fusion import ConcatFusion
from mce.nn.model import MultimodalModel
from mce.support.checkpoint import load_checkpoint
from mce.tasks.brats import build_model as build_brats_model
from mce.train import config_for, main, parse_config, run

MODALITIES = ("a", "b", "c")
DIM, CLASSES = 4, 3
PRESENT = [0b111, 0b011, 0b100, 0b110, 0b001, 0b101, 0b111]


def small_model(seed: int = 0) -> MultimodalModel:
    """Three modalities of 3 inputs, linear encoders, a two-layer decoder of 3 classes."""
    torch.manual_seed(seed)
    return MultimodalModel(
        MODALITIES,
        encoders={name: nn.Linear(3, DIM) for name in MODALITIES},
        heads={name: nn.Linear(DIM, CLASSES) for name in MODALITIES},
        fusion=ConcatFusion(3, DIM),
        decoder=nn.Sequential(nn.Linear(3 * DIM, 5), nn.ReLU(), nn.Linear(5, CLASSES)),
        reconstruction=None,
        dim=DIM,
    )


def small_batch(present: list[int], seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    num = len(present)
    inputs = {name: torch.randn(num, 3, generator=generator) for name in MODALITIES}
    target = torch.tensor([n % CLASSES for n in range(num)])
    return Batch(inputs, target, torch.tensor(present), torch.arange(num))


def cross_entropy(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample CE, averaged over the cells of a dense output."""
    losses = F.cross_entropy(outputs, target.long(), reduction="none")
    return losses.flatten(1).mean(1) if losses.dim() > 1 else losses


def method_inputs(counts=(5, 4, 6), size=10, loss=cross_entropy) -> MethodInputs:
    def utility(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (outputs.argmax(1) == target).float().flatten(1).mean(1)

    return MethodInputs(loss, utility, torch.tensor(counts), size, 0)


# --------------------------------------------------------------------------------------------
# the loss, from the formulas, sample by sample and modality by modality
# --------------------------------------------------------------------------------------------


def _row(model, h, n: int, subset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own decoder features and output of the single row (n, subset)."""
    _, features, outputs = model.forward_rows_features(h, torch.tensor([[n, subset]]))
    return features[0], outputs[0]


def _head(model, h, n: int, m: int) -> torch.Tensor:
    name = model.modalities[m]
    if isinstance(h, torch.Tensor):
        return model.heads[name](h[n : n + 1, m])
    return model.heads[name]([level[n : n + 1, m] for level in (*h.skips, h.bottleneck)])


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)) over dim 0, mean over the cells."""
    p_t = torch.softmax(teacher.detach() / temperature, 0)
    log_s = torch.log_softmax(student / temperature, 0)
    return temperature**2 * (p_t * (p_t.log() - log_s)).sum(0).mean()


def _dense_proto(f_m, f_full, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class GT-masked prototypes of one sample, cosine maps, squared / absolute error."""
    squared, absolute = [], []
    for c in labels.unique().tolist():
        mask = (labels == c).float()
        proto_m = (f_m * mask).sum((1, 2, 3)) / mask.sum()
        proto_f = (f_full * mask).sum((1, 2, 3)) / mask.sum()
        cos_m = F.cosine_similarity(f_m, proto_m[:, None, None, None], dim=0)
        cos_f = F.cosine_similarity(f_full, proto_f[:, None, None, None], dim=0)
        squared.append((cos_m - cos_f).pow(2))
        absolute.append((cos_m - cos_f).abs())
    return torch.stack(squared).mean(), torch.stack(absolute).mean()


def _vector_proto(features, full, target, pairs) -> dict:
    """Batch prototypes per modality and class (no gradient); per pair the mean over the
    classes of the squared / absolute cosine differences."""
    terms = {}
    for m in {m for _, m in pairs}:
        members = [n for n, k in pairs if k == m]
        classes = sorted({int(target[n]) for n in members})
        proto_m, proto_f = {}, {}
        for c in classes:
            of_c = [n for n in members if int(target[n]) == c]
            proto_m[c] = torch.stack([features[n, m].detach() for n in of_c]).mean(0)
            proto_f[c] = torch.stack([full[n].detach() for n in of_c]).mean(0)
        for n in members:
            diffs = torch.stack(
                [
                    F.cosine_similarity(features[n, m], proto_m[c], dim=0)
                    - F.cosine_similarity(full[n].detach(), proto_f[c], dim=0)
                    for c in classes
                ]
            )
            terms[n, m] = (diffs.pow(2).mean(), diffs.abs().mean())
    return terms


def oracle_loss(model, batch, inputs, config, beta) -> torch.Tensor:
    """The PASSION loss written out from the formulas with Python loops."""
    temperature = config.distill_temperature
    present = batch.present.tolist()
    num, num_modalities = len(present), model.num_modalities
    h = model.encode(batch.inputs, batch.present, batch.lengths)
    pairs = [(n, m) for n in range(num) for m in range(num_modalities) if present[n] >> m & 1]
    full, full_out, features, outputs = {}, {}, {}, {}
    for n in range(num):
        full[n], full_out[n] = _row(model, h, n, present[n])
    for n, m in pairs:
        features[n, m], outputs[n, m] = _row(model, h, n, 1 << m)
    target = batch.target
    dense = target.dim() > 1
    sep, kl, proto, dist = {}, {}, {}, {}
    vector_terms = {} if dense else _vector_proto(features, full, target, pairs)
    for n, m in pairs:
        sep[n, m] = inputs.loss(_head(model, h, n, m), target[n : n + 1])[0]
        kl[n, m] = _kl(outputs[n, m], full_out[n], temperature)
        if dense:
            proto[n, m], dist[n, m] = _dense_proto(features[n, m], full[n].detach(), target[n])
        else:
            proto[n, m], dist[n, m] = vector_terms[n, m]
    rp = [0.0] * num_modalities
    for n in range(num):
        mine = [m for m in range(num_modalities) if present[n] >> m & 1]
        mean = sum(float(dist[n, m].detach()) for m in mine) / len(mine)
        for m in mine:
            rp[m] += float(dist[n, m].detach()) / mean - 1 if mean > 0 else 0.0
    gate = [1.0 if r > 0 else 0.0 for r in rp]
    weight = [inputs.dataset_size / int(c) for c in inputs.counts]
    total = 0.0
    for n in range(num):
        total = total + inputs.loss(full_out[n][None], target[n : n + 1])[0]
        for m in range(num_modalities):
            if (n, m) in sep:
                total = total + gate[m] * beta[m] * weight[m] * sep[n, m]
                total = total + config.self_distill_weight * beta[m] * weight[m] * kl[n, m]
                total = total + config.prototype_distill_weight * gate[m] * weight[m] * proto[n, m]
    return total / num, gate


def _compare(model, batch, inputs, config, beta) -> dict[str, float]:
    method = PASSIONMethod(inputs, config)
    method.weights.beta = list(beta)
    result = method.step(model, batch, 0)
    grads = torch.autograd.grad(result.loss, list(model.parameters()), allow_unused=True)
    expected, gate = oracle_loss(model, batch, inputs, config, beta)
    wanted = torch.autograd.grad(expected, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(result.loss, expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, wanted):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert [result.logs[f"gate/{name}"] for name in model.modalities] == gate
    return result.logs


def test_the_loss_is_the_formula_on_a_vector_model() -> None:
    model, batch = small_model(), small_batch(PRESENT)
    config = PASSIONConfig(distill_temperature=2.0, self_distill_weight=0.7)
    logs = _compare(model, batch, method_inputs(), config, beta=(0.8, 1.3, 0.9))
    assert 0 < sum(logs[f"gate/{name}"] for name in MODALITIES) < 3  # the gate acts
    assert logs["beta/b"] == 1.3 and logs["beta_lr"] == 0.01


@pytest.mark.slow
def test_the_loss_is_the_formula_on_a_dense_model() -> None:
    torch.manual_seed(0)
    model = build_brats_model(crop=8, base=2, levels=3).eval()
    generator = torch.Generator().manual_seed(1)
    names = model.modalities
    present = [0b0101, 0b1111, 0b0010, 0b1100]
    inputs = {n: torch.randn(4, 1, 8, 8, 8, generator=generator) for n in names}
    target = torch.randint(0, 4, (4, 8, 8, 8), generator=generator)
    target[0][target[0] == 3] = 1  # a sample without class 3
    batch = Batch(inputs, target, torch.tensor(present), torch.arange(4))
    method = method_inputs(counts=(7, 5, 9, 4), size=12)
    _compare(model, batch, method, PASSIONConfig(), beta=(1.1, 0.7, 1.0, 1.2))


def test_dense_prototypes_cover_the_visible_cells_of_a_binary_target() -> None:
    generator = torch.Generator().manual_seed(2)
    outputs = torch.randn(2, 1, 5, 6, generator=generator)
    vehicle = torch.rand(2, 5, 6, generator=generator) > 0.6
    visible = torch.rand(2, 5, 6, generator=generator) > 0.3
    labels, valid, classes = class_maps(outputs, torch.stack([vehicle, visible], 1).to(torch.uint8))
    assert classes == 2 and torch.equal(labels, vehicle.long()) and torch.equal(valid, visible)
    features = torch.randn(3, 4, 5, 6, generator=generator)
    teacher = torch.randn(2, 4, 5, 6, generator=generator)
    samples = torch.tensor([0, 0, 1])
    proto, dist = dense_prototype_terms(features, teacher, samples, labels, valid, 2)
    # what hides under an invisible cell changes nothing
    hidden = ~valid[samples][:, None]
    changed = features + 5 * hidden * torch.randn(features.shape, generator=generator)
    again = dense_prototype_terms(changed, teacher, samples, labels, valid, 2)
    torch.testing.assert_close(again, (proto, dist))
    assert (proto > 0).all() and (dist <= proto.sqrt() + 1e-6).all()  # mean |x| <= rms
    with pytest.raises(ValueError, match="passion needs class labels"):
        class_maps(torch.randn(2, 3, 4), torch.zeros(2, 5))


# --------------------------------------------------------------------------------------------
# the gate and beta
# --------------------------------------------------------------------------------------------


def test_the_gate_follows_a_hand_computed_example() -> None:
    # sample 0: (a, b) = (0.1, 0.3), mean 0.2: -0.5, +0.5
    # sample 1: (a, b, c) = (0.2, 0.2, 0.5), mean 0.3: -1/3, -1/3, +2/3
    # sample 2: c alone: 0; sample 3: b alone with distance 0: 0
    samples = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    modality = torch.tensor([0, 1, 0, 1, 2, 2, 1])
    dist = torch.tensor([0.1, 0.3, 0.2, 0.2, 0.5, 0.4, 0.0])
    rp = preference_gate(dist, samples, modality, (4, 3))
    assert rp.dtype == torch.float64
    torch.testing.assert_close(rp, torch.tensor([-5 / 6, 1 / 6, 2 / 3], dtype=torch.float64))
    assert (rp > 0).tolist() == [False, True, True]


def test_beta_follows_a_hand_computed_example() -> None:
    weights = PreferenceWeights(torch.tensor([10, 20, 40, 5]), PASSIONConfig())
    weights.add([0.5, 1.0, 8.0, 0.25])
    weights.add([0.5, 3.0, 4.0, 0.25])
    # d = (0.1, 0.2, 0.3, 0.1), mean 0.175: rp = (3/7, -1/7, -5/7, 3/7); eta 0.01 x 1.5
    # beta = 1 - 0.015 rp = (0.993571, 1.002143, 1.010714, 0.993571), then 2 beta / ||beta||
    beta = weights.update(1)
    assert beta == pytest.approx([0.9935463, 1.0021175, 1.0106888, 0.9935463], abs=1e-7)
    assert weights.eta == pytest.approx(0.015) and weights.sums == [0.0] * 4
    # an epoch of equal distances leaves beta; eta does not grow after epoch 1
    weights.add([1.0, 2.0, 4.0, 0.5])
    assert weights.update(2) == pytest.approx(beta) and weights.eta == pytest.approx(0.015)


def test_beta_is_clamped_rescaled_and_eta_grows_on_schedule() -> None:
    config = PASSIONConfig(beta_lr=10.0, beta_lr_growth=2.0, beta_lr_growth_every=2)
    weights = PreferenceWeights(torch.tensor([4, 4, 0]), config)  # c never present
    weights.add([4.0, 0.4, 0.0])  # d = (1, 0.1), mean 0.55: rp = (-9/11, 9/11)
    beta = weights.update(1)  # eta 20: (1 + 16.4, 1 - 16.4) clamped to (4, 0.1); c keeps 1
    norm = math.sqrt(4**2 + 0.1**2 + 1)
    assert beta == pytest.approx([math.sqrt(3) * b / norm for b in (4, 0.1, 1)])
    etas = [weights.eta]
    for epoch in (2, 3, 4):
        weights.update(epoch)
        etas.append(weights.eta)
    assert etas == [20.0, 20.0, 40.0, 40.0]  # grown after epochs 0 and 2
    state = weights.state_dict()
    other = PreferenceWeights(torch.tensor([4, 4, 0]), config)
    other.load_state_dict(state)
    assert other.state_dict() == state
    with pytest.raises(ValueError, match="of 3 modalities cannot be loaded into 2"):
        PreferenceWeights(torch.tensor([1, 1]), config).load_state_dict(state)


def test_steps_accumulate_the_global_distances_and_epochs_update_beta() -> None:
    model, batch = small_model(), small_batch(PRESENT)
    method = PASSIONMethod(method_inputs(), PASSIONConfig())
    assert method.begin_epoch(model, None, 0) is None
    assert method.weights.beta == [1.0] * 3
    first = method.step(model, batch, 0).logs
    second = method.step(model, batch, 1).logs
    pairs = {m: sum(mask >> m & 1 for mask in PRESENT) for m in range(3)}
    for m, name in enumerate(MODALITIES):
        expected = (first[f"dist/{name}"] + second[f"dist/{name}"]) * pairs[m]
        assert method.weights.sums[m] == pytest.approx(expected)
    sums = list(method.weights.sums)
    assert method.begin_epoch(model, None, 1) is None
    check = PreferenceWeights(torch.tensor([5, 4, 6]), PASSIONConfig())
    check.add(sums)
    assert method.weights.beta == check.update(1) != [1.0] * 3


# --------------------------------------------------------------------------------------------
# options and registration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"distill_temperature": 0.0}, "distill_temperature must be a finite number > 0"),
        ({"self_distill_weight": -0.5}, "self_distill_weight must be a finite number >= 0"),
        ({"prototype_distill_weight": float("nan")}, "prototype_distill_weight must be a finite"),
        ({"beta_lr": True}, "beta_lr must be a finite number >= 0, got True"),
        ({"beta_lr_growth": 0}, "beta_lr_growth must be a finite number > 0"),
        ({"beta_lr_growth_every": 0}, "beta_lr_growth_every must be a positive int, got 0"),
        ({"beta_lr_growth_every": 2.5}, "beta_lr_growth_every must be a positive int"),
    ],
)
def test_bad_options_are_named(options, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        PASSIONConfig(**options)
    assert "\n" not in str(error.value)


def test_a_bad_flag_is_one_line_on_the_command_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--method", "passion", "--distill-temperature", "-1"])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "distill_temperature" in line]
    assert len(lines) == 1 and "must be a finite number > 0, got -1" in lines[0]


def test_passion_is_registered_with_its_own_settings() -> None:
    assert "passion" in METHODS and not METHODS["passion"].needs_upper_bounds(None)
    config = config_for(method="passion", self_distill_weight=0.25, beta_lr_growth_every=50)
    options = config.method_options["passion"]
    assert options == PASSIONConfig(self_distill_weight=0.25, beta_lr_growth_every=50)
    assert get_method("passion").build(method_inputs(), options).config is options
    with pytest.raises(TypeError, match="passion options must be a PASSIONConfig"):
        get_method("passion").build(method_inputs(), {"beta_lr": 0.1})
    parsed, _ = parse_config(["--method", "passion", "--prototype-distill-weight", "0.3"])
    assert parsed.method_options["passion"].prototype_distill_weight == 0.3


def test_the_experiment_runner_takes_passion() -> None:
    from mce.experiment.cli import parse_spec
    from mce.experiment.grid import cells_of
    from mce.tasks import get_task

    spec, _ = parse_spec(
        ["--variants", "baseline,passion", "--seeds", "0", "--set", "beta_lr=0.02"]
    )
    cells = cells_of(spec, get_task("digits"))
    config = cells[1].config(spec, Path("out"))
    assert config.method == "passion" and config.method_options["passion"].beta_lr == 0.02


# --------------------------------------------------------------------------------------------
# training end to end: resume, and every task's fixture
# --------------------------------------------------------------------------------------------




def test_resume_equals_uninterrupted(tmp_path, one_thread) -> None:
    base = {"method": "passion", "epochs": 2, "batch_size": 256, "seed": 4, "progress": False}
    expected = run(config_for(out=str(tmp_path / "straight"), **base))
    resumed = config_for(out=str(tmp_path / "resumed"), **base)
    checkpoint = tmp_path / "resumed" / "passion" / "checkpoint.pt"
    # 1,257 training samples / 256 = 5 steps an epoch: stop inside epoch 0
    assert run(resumed, stop_at_step=3) == {}
    middle = load_checkpoint(checkpoint)["method"]["preference_weights"]
    assert middle["beta"] == [1.0, 1.0] and min(middle["sums"]) > 0
    # then at the epoch boundary, after epoch 1's beta update
    assert run(resumed, resume=True, stop_at_step=5) == {}
    boundary = load_checkpoint(checkpoint)
    assert boundary["epoch"] == 1 and boundary["batch_in_epoch"] == 0
    assert boundary["prepared_epoch"] == 1
    weights = boundary["method"]["preference_weights"]
    assert weights["beta"] != [1.0, 1.0] and weights["sums"] == [0.0, 0.0]
    assert weights["eta"] == pytest.approx(0.015)
    assert run(resumed, resume=True) == expected
    final_a = load_checkpoint(tmp_path / "straight" / "passion" / "checkpoint.pt")
    final_b = load_checkpoint(checkpoint)
    assert final_a["method"] == final_b["method"]
    for key in final_a["model"]:
        assert torch.equal(final_a["model"][key], final_b["model"][key]), key
    logged = (tmp_path / "resumed" / "passion" / "log.csv").read_text().splitlines()
    assert logged == (tmp_path / "straight" / "passion" / "log.csv").read_text().splitlines()


def _scores(out) -> dict[str, float]:
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {"passion"}
    assert all(0 <= value <= 100 for value in results["scores"]["passion"].values())
    return results["scores"]["passion"]


@pytest.mark.slow
def test_cli_trains_passion_on_the_bundled_digits(tmp_path) -> None:
    argv = ["--method", "passion", "--epochs", "1", "--batch-size", "512", "--no-progress"]
    assert main([*argv, "--beta-lr", "0.02", "--out", str(tmp_path)]) == 0
    assert set(_scores(tmp_path)) == {"image", "audio", "image+audio", "average"}
    header = (tmp_path / "passion" / "log.csv").read_text().splitlines()[0].split(",")
    terms = ("l_task", "l_sep", "l_kl", "l_prototype", "beta/image", "gate/audio", "dist/image")
    assert set(terms) <= set(header)
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert config["method_options"]["passion"]["beta_lr"] == 0.02
    checkpoint = load_checkpoint(tmp_path / "passion" / "checkpoint.pt")
    assert set(checkpoint["method"]["preference_weights"]) == {"beta", "eta", "sums"}


@pytest.mark.slow
def test_cli_trains_passion_on_avmnist(tmp_path) -> None:
    write_avmnist_fixture(tmp_path / "data")
    argv = ["--task", "avmnist", "--data-dir", str(tmp_path / "data"), "--method", "passion"]
    argv += ["--epochs", "2", "--batch-size", "8", "--missing-rates", "0.2,0.5", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert set(_scores(tmp_path / "run")) == {"image", "audio", "image+audio", "average"}


@pytest.mark.slow
def test_cli_trains_passion_on_iemocap(tmp_path) -> None:
    data = write_iemocap_fixture(tmp_path / "data")
    argv = ["--task", "iemocap", "--data-dir", str(data), "--method", "passion"]
    argv += ["--missing-rates", "a", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert len(_scores(tmp_path / "run")) == 8  # 7 combinations and the average


@pytest.mark.slow
def test_cli_trains_passion_on_brats(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = write_brats_fixture(tmp_path / "data", cases=6)
    argv = ["--task", "brats", "--data-dir", str(data), "--method", "passion"]
    argv += ["--task-option", "crop=16", "--task-option", "base=4", "--task-option", "levels=3"]
    argv += ["--epochs", "1", "--missing-rates", "0.3,0.3,0.2,0", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    scores = _scores(tmp_path / "run")
    assert len(scores) == 16 and "t1+t1ce+flair+t2" in scores


def test_cli_trains_passion_on_nuscenes(tmp_path) -> None:
    pytest.importorskip(
        "nuscenes", reason="the nuScenes task needs nuscenes-devkit (pip install '.[nuscenes]')"
    )
    data = write_nuscenes_fixture(tmp_path / "data", samples_per_scene=3, sweeps=1)
    options = {"image_height": 36, "image_width": 64, "cells": 16, "dim": 8, "radar_sweeps": 1}
    argv = ["--task", "nuscenes", "--data-dir", str(data), "--method", "passion"]
    for name, value in options.items():
        argv += ["--task-option", f"{name}={value}"]
    argv += ["--epochs", "1", "--missing-rates", "0.2,0.3,0.4", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    scores = _scores(tmp_path / "run")
    assert len(scores) == 8 and "camera+lidar+radar" in scores
