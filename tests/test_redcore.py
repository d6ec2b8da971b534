"""RedCore: the supervision-weight update worked by hand, the variational encoders, imputation by
cross-modal imagination, the KL over present modalities, state across checkpoints, options, and
``--method redcore`` on every task's fixture."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from data.avmnist_fixture import write_avmnist_fixture
from data.brats_fixture import write_brats_fixture
from data.iemocap_fixture import write_iemocap_fixture
from data.nuscenes_fixture import write_nuscenes_fixture
from torch import nn

from mce.data.dataset import Batch
from mce.methods import METHODS, MethodInputs, RedCoreConfig, RedCoreMethod, get_method
from mce.methods.redcore import SupervisionWeights, adapt_model, released_schedule
from mce.nn.fusion import ConcatFusion
from mce.nn.model import MultimodalModel, full_rows, run_encoder
from mce.nn.redcore import CrossModalImagination, VariationalEncoder
from mce.support.checkpoint import load_checkpoint
from mce.tasks import get_task
from mce.tasks.brats import build_model as build_brats_model
from mce.train import config_for, main, parse_config, resolve_config, run
from mce.training.config import HPARAM_NAMES, TrainConfig, option_names
from mce.training.records import config_differences

MODALITIES = ("a", "b", "c")
DIM = 4
SMALL = RedCoreConfig(imagination_hidden=(8, 4), imagination_blocks=2)


def small_model(seed: int = 0) -> MultimodalModel:
    """Three modalities of 3 inputs, linear encoders to 4 features, RedCore's adaptation."""
    torch.manual_seed(seed)
    model = MultimodalModel(
        MODALITIES,
        encoders={name: nn.Linear(3, DIM) for name in MODALITIES},
        heads={name: nn.Linear(DIM, 2) for name in MODALITIES},
        fusion=ConcatFusion(3, DIM),
        decoder=nn.Linear(3 * DIM, 2),
        reconstruction=None,
        dim=DIM,
    )
    return adapt_model(model, SMALL)


def small_batch(present: list[int], seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    num = len(present)
    inputs = {name: torch.randn(num, 3, generator=generator) for name in MODALITIES}
    target = torch.randint(0, 2, (num,), generator=generator)
    return Batch(inputs, target, torch.tensor(present), torch.arange(num))


def method_inputs() -> MethodInputs:
    def loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, target, reduction="none")

    def utility(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (outputs.argmax(-1) == target).float()

    return MethodInputs(loss, utility, torch.tensor([5, 5, 5]), 10, 0)


# --------------------------------------------------------------------------------------------
# the supervision weights
# --------------------------------------------------------------------------------------------


def test_supervision_weights_follow_a_hand_computed_example() -> None:
    # loss_ema 0.5, eta 0.4 grown by 1.5 at iterations 0 and 4, updates at 0, 3, 6, floor 0.1
    config = RedCoreConfig(loss_ema=0.5, eta=0.4, eta_growth=1.5, eta_growth_every=4)
    weights = SupervisionWeights(3, config)

    # iteration 0: smoothed = 0.5 (0, 4, 4) = (0, 2, 2); mean 4/3; ra = (1, -1/2, -1/2);
    # eta = 0.4 x 1.5 = 0.6 (grows at 0); beta = (1, 1, 1) - 0.6 ra = (0.4, 1.3, 1.3),
    # none under the floor; / sqrt(0.16 + 1.69 + 1.69) = sqrt(3.54)
    beta0 = [b / math.sqrt(3.54) for b in (0.4, 1.3, 1.3)]  # (0.2126, 0.6909, 0.6909)
    assert weights.update([0.0, 4.0, 4.0]) == pytest.approx(beta0, abs=1e-12)
    assert weights.smoothed == pytest.approx([0.0, 2.0, 2.0])
    assert weights.eta == pytest.approx(0.6)
    # iterations 1 and 2: smoothed (0, 3, 3) then (0, 3.5, 3.5); no update (1, 2 % 3 != 0)
    assert weights.update([0.0, 4.0, 4.0]) == pytest.approx(beta0, abs=1e-12)
    assert weights.update([0.0, 4.0, 4.0]) == pytest.approx(beta0, abs=1e-12)
    assert weights.smoothed == pytest.approx([0.0, 3.5, 3.5])

    # iteration 3: smoothed (0, 3.75, 3.75), mean 2.5, ra = (1, -1/2, -1/2); beta_a =
    # 0.2126 - 0.6 < 0 is floored to 0.1; b = 1.3 / sqrt(3.54) + 0.3 = 0.9909 for the others;
    # / sqrt(0.01 + 2 b^2) = 1.4050
    b = 1.3 / math.sqrt(3.54) + 0.3
    norm3 = math.sqrt(0.01 + 2 * b * b)
    beta3 = [0.1 / norm3, b / norm3, b / norm3]  # (0.0712, 0.7053, 0.7053)
    assert weights.update([0.0, 4.0, 4.0]) == pytest.approx(beta3, abs=1e-12)

    # iteration 4: modality c absent from the batch: its smoothed loss stays 3.75; a: 0.5 x 0 +
    # 0.5 x 2 = 1; b: 0.5 x 3.75 + 0.5 x 4 = 3.875; eta grows to 0.9 (4 % 4 == 0); no update
    assert weights.update([2.0, 4.0, None]) == pytest.approx(beta3, abs=1e-12)
    assert weights.smoothed == pytest.approx([1.0, 3.875, 3.75])
    assert weights.eta == pytest.approx(0.9)
    # iteration 5: smoothed (1.5, 3.9375, 3.875); no update
    assert weights.update([2.0, 4.0, 4.0]) == pytest.approx(beta3, abs=1e-12)

    # iteration 6: smoothed (1.75, 3.96875, 3.9375), mean 9.65625 / 3 = 3.21875,
    # ra = 1 - smoothed / mean = (0.4563, -0.2330, -0.2233); beta3 - 0.9 ra =
    # (0.0712 - 0.4107 < 0 -> 0.1, 0.9150, 0.9063); / sqrt(0.01 + 0.9150^2 + 0.9063^2) = 1.2917
    mean6 = (1.75 + 3.96875 + 3.9375) / 3
    ra6 = [1 - s / mean6 for s in (1.75, 3.96875, 3.9375)]
    raw6 = [0.1, beta3[1] - 0.9 * ra6[1], beta3[2] - 0.9 * ra6[2]]
    assert beta3[0] - 0.9 * ra6[0] < 0.1  # the floor acts
    norm6 = math.sqrt(sum(v * v for v in raw6))
    beta6 = [v / norm6 for v in raw6]  # (0.0774, 0.7084, 0.7016)
    assert weights.update([2.0, 4.0, 4.0]) == pytest.approx(beta6, abs=1e-12)
    assert beta6 == pytest.approx([0.077415, 0.708359, 0.701595], abs=1e-6)
    assert weights.iteration == 7 and weights.eta == pytest.approx(0.9)


def test_supervision_weights_with_the_released_values() -> None:
    # eta 0.1 x 1.5 = 0.15 at iteration 0; smoothed 0.7 (1, 3) = (0.7, 2.1), mean 1.4,
    # ra = (0.5, -0.5); beta = (0.925, 1.075) / sqrt(0.925^2 + 1.075^2)
    weights = SupervisionWeights(2, RedCoreConfig())
    norm = math.sqrt(0.925**2 + 1.075**2)
    assert weights.update([1.0, 3.0]) == pytest.approx([0.925 / norm, 1.075 / norm])
    # a zero mean (no modality has a loss yet) leaves beta at (1, 1) normalised
    weights = SupervisionWeights(2, RedCoreConfig())
    assert weights.update([None, None]) == pytest.approx([2**-0.5, 2**-0.5])


def test_supervision_weights_state_round_trips() -> None:
    config = RedCoreConfig(beta_every=1)
    first = SupervisionWeights(3, config)
    for losses in ([1.0, 2.0, 3.0], [3.0, None, 1.0]):
        first.update(losses)
    second = SupervisionWeights(3, config)
    second.load_state_dict(first.state_dict())
    assert second.update([2.0, 2.0, 5.0]) == first.update([2.0, 2.0, 5.0])
    assert second.state_dict() == first.state_dict()
    with pytest.raises(ValueError, match="of 3 modalities cannot be loaded into 2"):
        SupervisionWeights(2, config).load_state_dict(first.state_dict())


# --------------------------------------------------------------------------------------------
# the networks
# --------------------------------------------------------------------------------------------


def test_variational_encoder_samples_in_training_and_returns_mu_in_eval() -> None:
    torch.manual_seed(0)
    encoder = VariationalEncoder(nn.Linear(3, DIM), DIM, initial_log_var=-1.0)
    x = torch.randn(5, 3)
    with torch.no_grad():
        features = encoder.encoder(x)
        mu, log_var = encoder.mean(features), encoder.log_var(features)
        assert torch.allclose(log_var, torch.full_like(log_var, -1.0))  # the initial noise
        torch.manual_seed(7)
        z = encoder(x)
        torch.manual_seed(7)
        eps = torch.randn_like(mu)
        torch.testing.assert_close(z, mu + eps * torch.exp(0.5 * log_var))
        assert not torch.allclose(z, mu)
        encoder.eval()
        torch.testing.assert_close(encoder(x), mu)
    kl = -(1 + log_var - mu.pow(2) - log_var.exp()).sum(1)  # no 1/2, as the released code
    torch.testing.assert_close(encoder.last_kl, kl)


def test_variational_encoder_on_levels_and_dense_features() -> None:
    class Levels(nn.Module):
        context_key = "calibration"

        def forward(self, x, lengths, context):
            fine = x[:, :2, None, None].expand(-1, 2, 4, 4) + context[:, :1, None, None]
            coarse = x[:, :, None, None].expand(-1, 3, 2, 2) * lengths[:, None, None, None]
            return fine, coarse

    torch.manual_seed(0)
    encoder = VariationalEncoder(Levels(), 3).eval()
    assert encoder.context_key == "calibration"
    x, lengths, context = torch.randn(2, 3), torch.tensor([1.0, 2.0]), torch.randn(2, 5)
    fine, z = run_encoder(encoder, x, lengths, {"calibration": context})
    expected_fine, coarse = Levels()(x, lengths, context)
    torch.testing.assert_close(fine, expected_fine)  # only the bottleneck is variational
    channels_last = coarse.movedim(1, -1)
    mu = encoder.mean(channels_last)
    log_var = encoder.log_var(channels_last)
    torch.testing.assert_close(z, mu.movedim(-1, 1))  # [B, C, 2, 2], mu in eval mode
    per_position = -(1 + log_var - mu.pow(2) - log_var.exp()).sum(-1)  # (B, 2, 2)
    torch.testing.assert_close(encoder.last_kl, per_position.flatten(1).mean(1))


def test_residual_xe_has_the_released_layout() -> None:
    imagination = CrossModalImagination(3, 128, hidden=(256, 128, 64), blocks=5)
    network = imagination.networks[0]
    shapes = [
        tuple(layer.weight.shape) for layer in network.encoders[0] if isinstance(layer, nn.Linear)
    ]
    assert shapes == [(256, 256), (128, 256), (64, 128)]  # (out, in): 256 -> 256 -> 128 -> 64
    shapes = [
        tuple(layer.weight.shape) for layer in network.decoders[0] if isinstance(layer, nn.Linear)
    ]
    assert shapes == [(128, 64), (256, 128), (256, 256)]
    assert len(network.encoders) == 5
    assert isinstance(network.encoders[0][-1], nn.Linear)  # no activation after the last layer
    assert isinstance(network.decoders[0][-1], nn.Linear)
    assert [tuple(m.weight.shape) for m in network.transition if isinstance(m, nn.Linear)] == [
        (256, 256),
        (128, 256),
    ]


def test_imputation_uses_real_tokens_where_present_and_imagined_ones_where_absent() -> None:
    model = small_model().eval()
    batch = small_batch([0b001, 0b110, 0b111, 0b101])
    imagination = model.reconstruction
    with torch.no_grad():
        h = model.encode(batch.inputs, batch.present)
        tokens, outputs = model.forward_rows(h, full_rows(batch.present))
        for n, mask in enumerate(batch.present.tolist()):
            for m in range(3):
                if (mask >> m) & 1:
                    assert torch.equal(tokens[n, m], h[n, m])
                else:
                    alone = h[n : n + 1].clone()  # the other modalities' tokens, zeros if absent
                    imagined = imagination.imagine_modality(alone, m)[0]
                    torch.testing.assert_close(tokens[n, m], imagined)
                    assert imagined.abs().sum() > 0
        # an absent modality's input is never read
        changed = dict(batch.inputs, a=batch.inputs["a"] + 100 * (batch.present[:, None] & 1 == 0))
        again = model.encode(changed, batch.present)
        assert torch.equal(model.forward_rows(again, full_rows(batch.present))[1], outputs)


def test_dense_imputation_imagines_each_bottleneck_voxel() -> None:
    torch.manual_seed(0)
    model = adapt_model(build_brats_model(crop=8, base=2, levels=3), SMALL).eval()
    generator = torch.Generator().manual_seed(1)
    names = ("t1", "t1ce", "flair", "t2")
    x = {n: torch.randn(2, 1, 8, 8, 8, generator=generator) for n in names}
    present = torch.tensor([0b0101, 0b1110])
    with torch.no_grad():
        h = model.encode(x, present)
        tokens, logits = model.forward_rows(h, full_rows(present))
        features = model.feature_tokens(h)  # (2, 4, C 2 2 2), channel-major
        channels = h.bottleneck.shape[2]
        for n, mask in enumerate(present.tolist()):
            for m in range(4):
                if (mask >> m) & 1:
                    assert torch.equal(tokens[n, m], features[n, m])
                    continue
                voxels = features[n].view(4, channels, -1)  # (M, C, P)
                for p in range(voxels.shape[2]):
                    token = voxels[:, :, p][None]  # (1, M, C): the modalities at voxel p
                    imagined = model.reconstruction.imagine_modality(token, m)[0]
                    torch.testing.assert_close(tokens[n, m].view(channels, -1)[:, p], imagined)
                imagined = model.reconstruction.imagine_features(features[n : n + 1], m)[0]
                torch.testing.assert_close(tokens[n, m], imagined)
    assert logits.shape == (2, 4, 8, 8, 8)


# --------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------


def _step(model, batch, config=SMALL, seed=3):
    torch.manual_seed(seed)
    return RedCoreMethod(method_inputs(), config).step(model, batch, 0)


def test_kl_covers_present_modalities_only() -> None:
    model = small_model()
    batch = small_batch([0b001, 0b011, 0b110, 0b101, 0b100])
    result = _step(model, batch)
    # the KL by hand: kl_weight x sum over present (n, m) of the encoder's KL / batch size
    total = 0.0
    for m, name in enumerate(MODALITIES):
        index = ((batch.present >> m) & 1).nonzero().flatten()
        encoder = model.encoders[name]
        with torch.no_grad():
            features = encoder.encoder(batch.inputs[name][index])
            mu, log_var = encoder.mean(features), encoder.log_var(features)
        total += float(-(1 + log_var - mu.pow(2) - log_var.exp()).sum())
    assert result.logs["kl"] == pytest.approx(0.0008 * total / 5, rel=1e-5)
    # changing the inputs of absent modalities changes nothing, a present one's changes the KL
    absent = {
        name: torch.where(((batch.present >> m) & 1).bool()[:, None], x, x + 50.0)
        for m, (name, x) in enumerate(batch.inputs.items())
    }
    same = _step(model, dataclasses.replace(batch, inputs=absent))
    assert same.logs == result.logs and torch.equal(same.loss, result.loss)
    present_changed = dataclasses.replace(batch, inputs=dict(batch.inputs, a=batch.inputs["a"] + 1))
    assert _step(model, present_changed).logs["kl"] != result.logs["kl"]


def test_the_loss_is_the_sum_of_its_terms_with_this_steps_beta() -> None:
    model = small_model()
    batch = small_batch([0b011, 0b011, 0b110, 0b101])
    logs = _step(model, batch).logs
    imagined = sum(logs[f"beta/{name}"] * logs[f"L_imagine/{name}"] for name in MODALITIES)
    assert logs["l_imagine"] == pytest.approx(imagined, rel=1e-6)
    expected = logs["l_task"] + logs["kl"] + logs["l_single"] + 0.15 * imagined
    assert logs["loss"] == pytest.approx(expected, rel=1e-6)
    # L_m by hand: modality b (samples 0, 1, 2) imagined from a and c, against its real token
    model.eval()  # z = mu: the same tokens as in the step only up to the noise, so recompute
    with torch.no_grad():
        h = model.encode(batch.inputs, batch.present)
        real = h[[0, 1, 2]]
        imagined_b = model.reconstruction.imagine_modality(real, 1)
        by_hand = (imagined_b - real[:, 1]).pow(2).sum(1).mean()
    method = RedCoreMethod(method_inputs(), SMALL)
    assert method.step(model, batch, 0).logs["L_imagine/b"] == pytest.approx(float(by_hand))
    # after one step the weights are the update's (iteration 0 updates them)
    weights = SupervisionWeights(3, SMALL)
    beta = weights.update([logs[f"L_imagine/{name}"] for name in MODALITIES])
    assert [logs[f"beta/{name}"] for name in MODALITIES] == pytest.approx(beta)


def test_a_modality_absent_from_the_batch_skips_its_imagination_loss() -> None:
    model = small_model()
    method = RedCoreMethod(method_inputs(), SMALL)
    first = method.step(model, small_batch([0b111, 0b011]), 0)
    smoothed_c = method.weights.smoothed[2]
    second = method.step(model, small_batch([0b011, 0b001], seed=1), 1)
    assert math.isnan(second.logs["L_imagine/c"]) and not math.isnan(first.logs["L_imagine/c"])
    assert method.weights.smoothed[2] == smoothed_c  # u_c = the previous smoothed value
    assert torch.isfinite(second.loss)


def test_the_imagination_target_is_not_detached() -> None:
    # Only modality a is present: b and c imagine nothing, and a is imagined from zeros, so the
    # imagination loss reaches a's encoder only through its target.
    def grads(weight: float) -> torch.Tensor:
        model = small_model()
        config = dataclasses.replace(SMALL, imagination_weight=weight)
        _step(model, small_batch([0b001] * 4), config).loss.backward()
        return model.encoders["a"].encoder.weight.grad.clone()

    assert not torch.allclose(grads(0.0), grads(10.0))


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
    inputs = dataclasses.replace(method_inputs(), counts=torch.tensor([2, 1]))
    with pytest.raises(ValueError, match="needs a model built by mce.methods.redcore.adapt_model"):
        RedCoreMethod(inputs, SMALL).step(plain, batch, 0)
    adapt_model(plain, SMALL)
    with pytest.raises(ValueError, match="adapted twice"):
        adapt_model(plain, SMALL)
    with pytest.raises(ValueError, match="at least 2 modalities"):
        CrossModalImagination(1, DIM, (8,), 1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kl_weight": -1.0}, "kl_weight must be a finite number >= 0"),
        ({"imagination_weight": float("nan")}, "imagination_weight must be a finite number"),
        ({"loss_ema": 0.0}, "loss_ema must be a finite number > 0"),
        ({"loss_ema": 1.5}, r"loss_ema must be in \(0, 1\]"),
        ({"beta_every": 0}, "beta_every must be a positive int"),
        ({"eta_growth_every": 2.5}, "eta_growth_every must be a positive int"),
        ({"eta": True}, "eta must be a finite number"),
        ({"eta_growth": 0}, "eta_growth must be a finite number > 0"),
        ({"beta_floor": -0.1}, "beta_floor must be a finite number >= 0"),
        ({"imagination_hidden": ()}, "imagination_hidden must be a non-empty sequence"),
        ({"imagination_hidden": (64, 0)}, "imagination_hidden must be a positive int"),
        ({"imagination_blocks": 0}, "imagination_blocks must be a positive int"),
        ({"initial_log_var": float("inf")}, "initial_log_var must be a finite number"),
    ],
)
def test_bad_options_are_named(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        RedCoreConfig(**options)


def test_options_are_routed_by_clash_free_names() -> None:
    own = {spec.name for spec in dataclasses.fields(TrainConfig)}
    methods = [set(option_names(spec.options)) for spec in METHODS.values() if spec.options]
    groups = [set(HPARAM_NAMES), *methods, own]
    assert len(methods) >= 2
    assert sum(map(len, groups)) == len(set().union(*groups))
    config = config_for(method="redcore", kl_weight=0.01, mc_k=7, epochs=3)
    redcore = config.method_options["redcore"]
    assert redcore.kl_weight == 0.01 and config.method_options["mce"].mc_k == 7
    assert config.hparams.epochs == 3
    assert config.options_for("redcore") is redcore
    assert get_method("redcore").build(method_inputs(), redcore).config is redcore
    with pytest.raises(TypeError, match="redcore options must be a RedCoreConfig"):
        get_method("redcore").build(method_inputs(), {"kl_weight": 0.1})
    assert not METHODS["redcore"].needs_upper_bounds(None)


def test_tasks_give_their_own_defaults_and_flags_override_them(tmp_path, capsys) -> None:
    brats = get_task("brats").options_for_method("redcore")
    assert brats == RedCoreConfig(schedule="released")
    assert get_task("digits").options_for_method("redcore") == RedCoreConfig()
    assert get_task("digits").options_for_method("baseline") is None
    argv = ["--task", "brats", "--data-dir", str(tmp_path), "--method", "redcore"]
    config, _ = parse_config([*argv, "--kl-weight", "0.01", "--imagination-hidden", "32,16"])
    assert config.method_options["redcore"] == dataclasses.replace(
        brats, kl_weight=0.01, imagination_hidden=(32, 16)
    )
    assert config_for("brats", method="redcore").method_options["redcore"] == brats
    assert resolve_config(TrainConfig(task="brats")).method_options["redcore"] == brats
    for flags, message in (
        (["--loss-ema", "2"], "loss_ema must be in (0, 1]"),
        (["--imagination-hidden", "64,x"], "expected widths like 256,128,64"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_config(["--method", "redcore", *flags])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_task_method_options_are_checked() -> None:
    digits = get_task("digits")
    with pytest.raises(ValueError, match="method_options names 'nope'"):
        dataclasses.replace(digits, method_options={"nope": RedCoreConfig()})
    with pytest.raises(ValueError, match=r"method_options\['redcore'\] must be a RedCoreConfig"):
        dataclasses.replace(digits, method_options={"redcore": {"kl_weight": 0.1}})


def test_a_config_written_before_redcore_existed_still_resumes() -> None:
    config = config_for(method="mce", epochs=2)
    saved = json.loads(json.dumps(config.to_dict()))
    options = saved["method_options"]
    del options["redcore"]
    assert config_differences(saved, config) == []
    options["redcore"] = dict(options.get("redcore", {}), kl_weight=0.5)
    assert config_differences(saved, config) == ["redcore"]


def test_the_experiment_runner_takes_redcore() -> None:
    from mce.experiment.cli import parse_spec
    from mce.experiment.grid import VARIANTS, cells_of

    argv = ["--variants", "mce,baseline,redcore", "--seeds", "0", "--set", "kl_weight=0.002"]
    spec, _ = parse_spec([*argv, "--set", "imagination_hidden=32,16"])
    cells = cells_of(spec, get_task("digits"))
    assert [cell.variant.name for cell in cells] == ["mce", "baseline", "redcore"]
    config = cells[2].config(spec, Path("out"))
    redcore = config.method_options["redcore"]
    assert config.method == "redcore" and redcore.kl_weight == 0.002
    assert redcore.imagination_hidden == (32, 16)
    components = VARIANTS["redcore"].components()
    assert components["L_single"] and not any(v for k, v in components.items() if k != "L_single")


# --------------------------------------------------------------------------------------------
# training end to end on every task's fixture
# --------------------------------------------------------------------------------------------


def _scores(out, method="redcore") -> dict[str, float]:
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {method}
    assert all(0 <= value <= 100 for value in results["scores"][method].values())
    return results["scores"][method]


@pytest.mark.slow
def test_cli_trains_redcore_on_the_bundled_digits(tmp_path) -> None:
    argv = ["--method", "redcore", "--epochs", "1", "--batch-size", "512", "--no-progress"]
    assert main([*argv, "--imagination-blocks", "2", "--out", str(tmp_path)]) == 0
    assert set(_scores(tmp_path)) == {"image", "audio", "image+audio", "average"}
    header = (tmp_path / "redcore" / "log.csv").read_text().splitlines()[0].split(",")
    for field in ("kl", "l_task", "l_single", "beta/image", "L_imagine/audio", "loss"):
        assert field in header
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert config["method_options"]["redcore"]["imagination_blocks"] == 2
    assert config["method_options"]["redcore"]["kl_weight"] == 0.0008
    checkpoint = load_checkpoint(tmp_path / "redcore" / "checkpoint.pt")
    assert checkpoint["method"]["supervision_weights"]["iteration"] == 3
    assert any(key.endswith("log_var.weight") for key in checkpoint["model"])




def test_resume_equals_uninterrupted(tmp_path, one_thread) -> None:
    base = dict(method="redcore", epochs=2, batch_size=256, seed=4, progress=False)
    expected = run(config_for(out=str(tmp_path / "straight"), **base))
    resumed = config_for(out=str(tmp_path / "resumed"), **base)
    # 1,055 training samples / 256 = 5 steps per epoch: stop inside epoch 0, then resume
    assert run(resumed, stop_at_step=4) == {}
    partial = load_checkpoint(tmp_path / "resumed" / "redcore" / "checkpoint.pt")
    assert partial["method"]["supervision_weights"]["iteration"] == 4
    assert run(resumed, resume=True) == expected
    final_a = load_checkpoint(tmp_path / "straight" / "redcore" / "checkpoint.pt")
    final_b = load_checkpoint(tmp_path / "resumed" / "redcore" / "checkpoint.pt")
    assert final_a["method"] == final_b["method"]
    for key in final_a["model"]:
        assert torch.equal(final_a["model"][key], final_b["model"][key]), key
    logged = (tmp_path / "resumed" / "redcore" / "log.csv").read_text().splitlines()
    assert logged == (tmp_path / "straight" / "redcore" / "log.csv").read_text().splitlines()


@pytest.mark.slow
def test_checkpoints_without_method_state(tmp_path) -> None:
    base = dict(method="redcore", epochs=1, batch_size=512, progress=False)
    config = config_for(out=str(tmp_path), **base)
    assert run(config, stop_at_step=1) == {}
    path = tmp_path / "redcore" / "checkpoint.pt"
    state = load_checkpoint(path)
    state["method"] = None
    torch.save(state, path)
    with pytest.raises(ValueError, match="holds no redcore method state"):
        run(config, resume=True)
    # a method without state resumes from a checkpoint written before checkpoints held one
    baseline = config_for(out=str(tmp_path / "b"), **dict(base, method="baseline"))
    assert run(baseline, stop_at_step=1) == {}
    path = tmp_path / "b" / "baseline" / "checkpoint.pt"
    state = load_checkpoint(path)
    assert state.pop("method") is None
    torch.save(state, path)
    assert set(run(baseline, resume=True)) == {"baseline"}


@pytest.mark.slow
def test_cli_trains_redcore_on_avmnist(tmp_path) -> None:
    write_avmnist_fixture(tmp_path / "data")
    argv = ["--task", "avmnist", "--data-dir", str(tmp_path / "data"), "--method", "redcore"]
    argv += ["--epochs", "2", "--batch-size", "8", "--missing-rates", "0.2,0.5", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert set(_scores(tmp_path / "run")) == {"image", "audio", "image+audio", "average"}


@pytest.mark.slow
def test_cli_trains_redcore_on_iemocap(tmp_path) -> None:
    data = write_iemocap_fixture(tmp_path / "data")
    argv = ["--task", "iemocap", "--data-dir", str(data), "--method", "redcore"]
    argv += ["--missing-rates", "a", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert len(_scores(tmp_path / "run")) == 8  # 7 combinations and the average
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["metrics"]["redcore"]) == {"uar", "f1"}


@pytest.mark.slow
def test_cli_trains_redcore_on_brats(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = write_brats_fixture(tmp_path / "data", cases=6)
    argv = ["--task", "brats", "--data-dir", str(data), "--method", "redcore"]
    argv += ["--task-option", "crop=16", "--task-option", "base=4", "--task-option", "levels=3"]
    argv += ["--epochs", "1", "--missing-rates", "0.3,0.3,0.2,0", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    scores = _scores(tmp_path / "run")
    assert len(scores) == 16 and "t1+t1ce+flair+t2" in scores
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["method_options"]["redcore"]["schedule"] == "released"  # the task's own


def test_cli_trains_redcore_on_nuscenes(tmp_path) -> None:
    pytest.importorskip(
        "nuscenes", reason="the nuScenes task needs nuscenes-devkit (pip install '.[nuscenes]')"
    )
    data = write_nuscenes_fixture(tmp_path / "data", samples_per_scene=3, sweeps=1)
    options = {"image_height": 36, "image_width": 64, "cells": 16, "dim": 8, "radar_sweeps": 1}
    argv = ["--task", "nuscenes", "--data-dir", str(data), "--method", "redcore"]
    for name, value in options.items():
        argv += ["--task-option", f"{name}={value}"]
    argv += ["--epochs", "1", "--missing-rates", "0.2,0.3,0.4", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    scores = _scores(tmp_path / "run")
    assert len(scores) == 8 and "camera+lidar+radar" in scores


def test_the_released_schedule_is_carried_over_to_the_run() -> None:
    released = released_schedule(RedCoreConfig(kl_weight=0.5), batch_size=128, steps=2_100)
    assert released == RedCoreConfig(kl_weight=0.5)  # the released run itself: unchanged
    brats = released_schedule(RedCoreConfig(), batch_size=1, steps=219 * 400)
    assert (brats.beta_every, brats.loss_ema, brats.eta_growth_every) == (384, 0.0094, 20857)
    four = released_schedule(RedCoreConfig(), batch_size=4, steps=2_700)
    assert (four.beta_every, four.eta_growth_every) == (96, 643)
    assert four.loss_ema == round(1 - 0.3 ** (4 / 128), 4)
    assert released_schedule(RedCoreConfig(), batch_size=512, steps=10).beta_every == 1
    # the method resolves it from the run's batch size and length
    inputs = dataclasses.replace(method_inputs(), batch_size=4, steps=2_700)
    method = get_method("redcore").build(inputs, RedCoreConfig(schedule="released"))
    assert method.config == dataclasses.replace(four, schedule="released")
    assert method.weights.config == method.config
    with pytest.raises(ValueError, match="needs the run's batch size and steps"):
        get_method("redcore").build(method_inputs(), RedCoreConfig(schedule="released"))
    with pytest.raises(ValueError, match="schedule must be one of steps, released"):
        RedCoreConfig(schedule="epochs")


def test_residual_xe_forward_is_the_released_residual_loop() -> None:
    """x_in = x_in + x_out; x_out = dec(enc(x_in)) per block, then the transition on
    x_in + x_out: written out layer by layer."""
    import torch.nn.functional as F

    from mce.nn.redcore import ResidualXE

    torch.manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    network = ResidualXE(6, 4, hidden=(5, 3), blocks=3)
    x = torch.randn(7, 6)
    x_in, x_out = x, torch.zeros_like(x)
    for encoder, decoder in zip(network.encoders, network.decoders):
        e1, e2 = (layer for layer in encoder if isinstance(layer, nn.Linear))
        d1, d2 = (layer for layer in decoder if isinstance(layer, nn.Linear))
        x_in = x_in + x_out
        x_out = d2(F.relu(d1(e2(F.leaky_relu(e1(x_in))))))
    t1, t2 = (layer for layer in network.transition if isinstance(layer, nn.Linear))
    expected = t2(F.relu(t1(x_in + x_out)))
    torch.testing.assert_close(network(x), expected)
