"""Row-budget ("sampled") coalition plans: unbiased Shapley values from at most budget + 1 rows
per sample, exact where every subset fits, efficient on every draw; the MCE step and CLI on them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from oracles import random_digit_inputs, random_game, random_present, table_lookup
from torch import nn

from mce.data.dataset import Batch
from mce.methods import MCEConfig, MCEMethod, MethodInputs
from mce.nn import ConcatFusion, ReconstructionTransformer
from mce.nn.model import MultimodalModel
from mce.ops.reference import shapley_brute_force
from mce.science.sampling import sampled_plan
from mce.science.shapley import coalition_plan, plan_shapley, shapley_values
from mce.support.bits import popcount
from mce.tasks.digits import TASK
from mce.train import main, parse_config


def _mixed_present(generator: torch.Generator, num_modalities: int) -> torch.Tensor:
    """Samples with every modality, and samples with 1 to 3 of them (random)."""
    everything = torch.full((4,), (1 << num_modalities) - 1, dtype=torch.int64)
    return torch.cat([everything, random_present(generator, 8, num_modalities, 0.4)])


# --- Unbiasedness: the mean over seeds is the exact Eq. 5 value ------------------------------


@pytest.mark.parametrize("num_modalities", [4, 5])
def test_mean_over_seeds_is_the_exact_shapley_value(seed, num_modalities):
    generator = torch.Generator().manual_seed(seed)
    present = _mixed_present(generator, num_modalities)
    table = random_game(generator, present, num_modalities)
    exact = torch.tensor(
        shapley_brute_force(present.tolist(), lambda n, s: float(table[n, s]), num_modalities),
        dtype=torch.float64,
    )
    draws = torch.stack(
        [
            shapley_values(present, table, method="sampled", budget=3, seed=s).double()
            for s in range(2000)
        ]
    )
    mean = draws.mean(0)
    standard_error = draws.std(0) / draws.shape[0] ** 0.5
    assert bool((standard_error > 0).any())
    # Within 5 standard errors; exact samples (a <= 2) and absent modalities have no spread,
    # and there only float error.
    excess = (mean - exact).abs() - 5.0 * standard_error
    assert bool((excess <= 1e-5).all()), (mean - exact) / standard_error.clamp(min=1e-12)


def test_samples_whose_subsets_fit_get_the_exact_values(seed):
    generator = torch.Generator().manual_seed(seed)
    # a <= 3: 2^a - 2 <= 6 proper subsets fit in budget 6; the four-modality samples are drawn.
    small = random_present(generator, 10, 3)
    present = torch.cat([small, torch.full((3,), 0b1111), small[:2] << 1])
    table = random_game(generator, present, 4)
    exact_plan = coalition_plan(present, 4)
    exact = plan_shapley(exact_plan, table_lookup(table)(exact_plan.rows))
    fits = popcount(present) <= 3
    for plan_seed in (0, 1, seed):
        plan = coalition_plan(present, 4, method="sampled", budget=6, seed=plan_seed)
        phi = plan_shapley(plan, table_lookup(table)(plan.rows))
        torch.testing.assert_close(phi[fits], exact[fits], rtol=1e-6, atol=1e-6)
        keep = fits[plan.samples]
        exact_keep = fits[exact_plan.samples]
        assert torch.equal(plan.rows[keep], exact_plan.rows[exact_keep])


def test_small_samples_need_no_draw():
    # a = 2 fits budget 2 (two proper subsets): the exact plan with its exact coefficients.
    present = torch.tensor([0b011, 0b110, 0b100])
    plan = coalition_plan(present, 3, method="sampled", budget=2, seed=5)
    assert torch.equal(plan.rows, coalition_plan(present, 3).rows)
    assert plan.coef is not None
    assert plan.coef.tolist()[:3] == [[0.5, -0.5, 0.0], [-0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]


# --- Every draw: efficiency and the shape of the plan ----------------------------------------


@pytest.mark.parametrize("num_modalities", [4, 5])
def test_every_draw_is_efficient(seed, num_modalities):
    generator = torch.Generator().manual_seed(seed)
    present = _mixed_present(generator, num_modalities)
    table = random_game(generator, present, num_modalities)
    full_value = table[torch.arange(present.shape[0]), present]
    for plan_seed in range(50):
        for budget in (1, 3):
            phi = shapley_values(present, table, method="sampled", budget=budget, seed=plan_seed)
            torch.testing.assert_close(phi.sum(1), full_value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("budget", [1, 3, 6, 20])
def test_rows_are_grouped_increasing_subsets_within_the_budget(seed, budget):
    generator = torch.Generator().manual_seed(seed)
    present = torch.cat([_mixed_present(generator, 5), torch.tensor([0b1, 0b10000])])
    rows, coef = sampled_plan(present, 5, budget, seed)
    samples, subsets = rows[:, 0], rows[:, 1]
    assert rows.dtype == torch.int64 and coef.dtype == torch.float32
    assert tuple(coef.shape) == (rows.shape[0], 5)
    per_sample = torch.bincount(samples, minlength=present.shape[0])
    assert bool((per_sample <= budget + 1).all())
    fits = (1 << popcount(present)) - 2 <= budget
    assert torch.equal(per_sample[fits], (1 << popcount(present[fits])) - 1)
    keys = (samples << 32) | subsets  # grouped by sample, strictly increasing subsets
    assert bool((keys[1:] > keys[:-1]).all())
    assert bool(((subsets > 0) & ((subsets & ~present[samples]) == 0)).all())
    full = subsets == present[samples]
    assert torch.equal(samples[full], torch.arange(present.shape[0]))  # one full row each
    absent = ((present[samples][:, None] >> torch.arange(5)) & 1) == 0
    assert bool((coef[absent] == 0).all())


def test_same_seed_same_plan_other_seed_other_plan():
    present = torch.full((20,), 0b1111)
    rows, coef = sampled_plan(present, 4, 3, seed=7)
    again_rows, again_coef = sampled_plan(present, 4, 3, seed=7)
    assert torch.equal(rows, again_rows) and torch.equal(coef, again_coef)
    other_rows, _ = sampled_plan(present, 4, 3, seed=8)
    assert rows.shape != other_rows.shape or not torch.equal(rows, other_rows)


def test_plan_is_the_same_on_every_device(seed, device):
    generator = torch.Generator().manual_seed(seed)
    present = _mixed_present(generator, 5)
    rows, coef = sampled_plan(present, 5, 3, seed)
    device_rows, device_coef = sampled_plan(present.to(device), 5, 3, seed)
    assert device_rows.device.type == device.type and device_coef.device.type == device.type
    assert torch.equal(device_rows.cpu(), rows) and torch.equal(device_coef.cpu(), coef)


def test_empty_batch_gives_an_empty_plan():
    rows, coef = sampled_plan(torch.zeros(0, dtype=torch.int64), 3, 3, 0)
    assert tuple(rows.shape) == (0, 2) and tuple(coef.shape) == (0, 3)


@pytest.mark.parametrize(
    ("present", "budget", "message"),
    [
        (torch.tensor([0b11]), 0, "budget .* must be a positive int"),
        (torch.tensor([0b11]), True, "budget .* must be a positive int"),
        (torch.tensor([0b11]), 2.0, "budget .* must be a positive int"),
        (torch.tensor([0b11, 0]), 3, r"present\[1\] is 0: sample 1 has no modality present"),
        (torch.tensor([0b1000]), 3, "sets bits outside the 3 modalities"),
        (torch.tensor([0b11], dtype=torch.int32), 3, "present must have dtype torch.int64"),
        (torch.tensor([[0b11]]), 3, "present must have 1 dimension"),
    ],
)
def test_bad_inputs_are_named(present, budget, message):
    with pytest.raises(ValueError, match=message):
        sampled_plan(present, 3, budget, 0)


def test_bad_seed_and_method_are_named():
    with pytest.raises(ValueError, match="seed must be an int"):
        sampled_plan(torch.tensor([0b11]), 2, 3, 2**63)
    with pytest.raises(ValueError, match="num_modalities must be in"):
        sampled_plan(torch.tensor([0b11]), 0, 3, 0)
    with pytest.raises(ValueError, match="method must be 'exact' or 'mc' .* or 'sampled'"):
        coalition_plan(torch.tensor([0b11]), 2, method="kernel")


# --- The MCE step and its configuration ------------------------------------------------------

_NAMES = ("a", "b", "c", "d")
_IN_DIMS = (5, 4, 6, 3)
_CLASSES, _DIM = 4, 8


def _four_modality_model(seed: int) -> MultimodalModel:
    torch.manual_seed(seed)
    count = len(_NAMES)
    return MultimodalModel(
        _NAMES,
        {n: nn.Sequential(nn.Linear(d, _DIM), nn.Tanh()) for n, d in zip(_NAMES, _IN_DIMS)},
        {n: nn.Linear(_DIM, _CLASSES) for n in _NAMES},
        ConcatFusion(count, _DIM),
        nn.Linear(count * _DIM, _CLASSES),
        ReconstructionTransformer(count, _DIM, heads=2, ff_dim=16, dropout=0.0),
        _DIM,
    )


def _ce(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, target, reduction="none")


def _p_target(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return outputs.softmax(-1).gather(1, target[:, None]).squeeze(1)


def test_mce_step_runs_on_a_sampled_plan(seed):
    generator = torch.Generator().manual_seed(seed)
    present = torch.cat([torch.tensor([0b1111, 0b0111, 0b1110]), random_present(generator, 9, 4)])
    num_samples, dataset_size = present.shape[0], 30
    inputs = {
        name: torch.randn(num_samples, d, generator=generator) * ((present >> m) & 1)[:, None]
        for m, (name, d) in enumerate(zip(_NAMES, _IN_DIMS))
    }
    target = torch.randint(0, _CLASSES, (num_samples,), generator=generator)
    index = torch.randperm(dataset_size, generator=generator)[:num_samples]
    batch = Batch(inputs, target, present, index)
    upper = torch.rand(dataset_size, len(_NAMES), generator=generator)
    method_inputs = MethodInputs(
        _ce, _p_target, torch.tensor([20, 15, 25, 10]), dataset_size, seed=seed, upper=upper
    )
    config = MCEConfig(shapley="sampled", row_budget=3)
    result = MCEMethod(method_inputs, config).step(_four_modality_model(seed), batch, step=2)
    assert torch.isfinite(result.loss)
    plan = coalition_plan(
        present, len(_NAMES), method="sampled", budget=3, seed=seed * 1_000_003 + 2
    )
    assert result.logs["rows"] == plan.num_rows <= 4 * num_samples
    assert bool((torch.bincount(plan.samples, minlength=num_samples) <= 4).all())
    assert plan.num_rows < coalition_plan(present, len(_NAMES)).num_rows
    assert all(result.logs[f"B/{name}"] >= 0 for name in _NAMES)


def test_two_modality_step_with_sampled_plan_is_the_exact_step(seed):
    # 2^2 - 2 = 2 proper subsets fit any budget >= 2: the sampled plan is the exact plan.
    generator = torch.Generator().manual_seed(seed)
    num_samples = 13
    present = random_present(generator, num_samples, 2)
    inputs = random_digit_inputs(generator, num_samples)
    target = torch.randint(0, 10, (num_samples,), generator=generator)
    upper = torch.rand(100, 2, generator=generator).round()
    batch = Batch(inputs, target, present, torch.arange(num_samples))
    method_inputs = MethodInputs(TASK.loss, TASK.utility, torch.tensor([40, 90]), 100, seed, upper)
    plan = coalition_plan(present, 2, method="sampled", budget=2, seed=seed)
    assert torch.equal(plan.rows, coalition_plan(present, 2).rows)
    logs = {}
    for shapley in ("exact", "sampled"):
        torch.manual_seed(seed)
        model = TASK.build_model().eval()
        config = MCEConfig(shapley=shapley, row_budget=2)
        logs[shapley] = MCEMethod(method_inputs, config).step(model, batch, step=0).logs
    assert logs["sampled"].keys() == logs["exact"].keys()
    for key, value in logs["exact"].items():
        assert logs["sampled"][key] == pytest.approx(value, rel=1e-5, abs=1e-5), key


def test_config_checks_the_row_budget_and_the_weighting():
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="row_budget must be a positive int"):
            MCEConfig(row_budget=bad)
    with pytest.raises(ValueError, match="weighting='official' .* needs exact plans"):
        MCEConfig(shapley="sampled", weighting="official")
    assert MCEConfig(shapley="sampled", row_budget=7).row_budget == 7


def test_cli_takes_sampled_and_row_budget(capsys):
    config, _ = parse_config(["--method", "mce", "--shapley", "sampled", "--row-budget", "5"])
    assert config.options_for("mce").shapley == "sampled"
    assert config.options_for("mce").row_budget == 5
    assert config.to_dict()["method_options"]["mce"]["row_budget"] == 5
    for argv, message in (
        (["--row-budget", "0"], "--row-budget must be at least 1"),
        (["--shapley", "sampled", "--weighting", "official"], "weighting"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_a_plan_over_max_rows_names_its_rows_and_bytes():
    from mce.science.sampling import sampled_plan

    present = torch.full((128,), (1 << 31) - 1, dtype=torch.int64)
    with pytest.raises(
        ValueError,
        match=r"^the row-budget plan of 128 samples x 1001 candidate rows \(about 6150144 bytes "
        r"of temporaries\) exceeds max_rows=100000; use a smaller budget or batch",
    ):
        sampled_plan(present, 31, budget=1000, seed=0, max_rows=100_000)
    with pytest.raises(ValueError, match="exceeds max_rows=100000"):  # through coalition_plan
        coalition_plan(present, 31, method="sampled", budget=1000, max_rows=100_000)


def test_a_plan_that_cannot_be_allocated_names_its_rows_and_bytes(monkeypatch):
    from mce.science import sampling

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")

    monkeypatch.setattr(sampling.torch, "rand", out_of_memory)
    with pytest.raises(
        ValueError,
        match=r"^the row-budget plan of 2 samples x 4 candidate rows \(about 384 bytes of "
        r"temporaries\) could not be allocated on cpu; use a smaller budget or batch",
    ):
        sampling.sampled_plan(torch.tensor([0b1111, 0b0111]), 4, budget=3, seed=0)

    def broken(*args, **kwargs):
        raise RuntimeError("Expected all tensors to be on the same device")

    monkeypatch.setattr(sampling.torch, "rand", broken)  # any other error stays itself
    with pytest.raises(RuntimeError, match="same device"):
        sampling.sampled_plan(torch.tensor([0b1111, 0b0111]), 4, budget=3, seed=0)
