"""One MCE training step: Shapley values and B against the oracle; ablation switches.

The digits task supplies the model, loss and utility; the method sees only MethodInputs.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from oracles import random_digit_inputs, random_present

from mce.data.dataset import Batch
from mce.lce import presence_counts
from mce.methods import MCEConfig, MCEMethod, MethodInputs
from mce.methods.official import official_batch_shapley
from mce.model import full_rows
from mce.reference import shapley_brute_force
from mce.shapley import coalition_plan
from mce.tasks.digits import TASK


def _setup(seed: int, num_samples: int = 13):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, num_samples, 2)
    inputs = random_digit_inputs(generator, num_samples)
    target = torch.randint(0, 10, (num_samples,), generator=generator)
    # Utilities of the frozen unimodal models on a 100-sample training split; the batch is its
    # first samples.
    upper = torch.zeros(100, 2)
    upper[:num_samples] = torch.rand(num_samples, 2, generator=generator).round() * torch.stack(
        [(present >> m) & 1 for m in range(2)], 1
    )
    batch = Batch(inputs, target, present, torch.arange(num_samples))
    torch.manual_seed(seed)
    model = TASK.build_model().eval()  # eval: no dropout, so the oracle sees the same model
    counts = torch.tensor([40, 90])
    return model, batch, upper, counts


def _inputs(counts, upper, seed: int, dataset_size: int = 100) -> MethodInputs:
    return MethodInputs(TASK.loss, TASK.utility, counts, dataset_size, seed, upper)


def test_step_shapley_and_b_equal_the_oracle(seed):
    model, batch, upper, counts = _setup(seed)
    method = MCEMethod(_inputs(counts, upper, seed), MCEConfig())
    logs = method.step(model, batch, step=0).logs
    # Oracle: predict from every subset of every sample one at a time, Eq. 5 by brute force.
    with torch.no_grad():
        h = model.encode(batch.inputs, batch.present)

        def utility(n: int, subset: int) -> float:
            _, out = model.forward_rows(h[n : n + 1], full_rows(torch.tensor([subset])))
            return float(out.argmax(-1).item() == batch.target[n].item())

        phi = torch.tensor(shapley_brute_force(batch.present.tolist(), utility, 2))
    for m, name in enumerate(model.modalities):
        present_m = ((batch.present >> m) & 1).bool()
        phi_m = phi[:, m].sum()
        u_m = upper[:, m].sum()
        assert logs[f"phi/{name}"] == pytest.approx(float(phi_m), abs=1e-5)
        assert logs[f"U/{name}"] == pytest.approx(float(u_m))
        expected_b = max(float(u_m - phi_m), 0.0) / int(present_m.sum())
        assert logs[f"B/{name}"] == pytest.approx(expected_b, abs=1e-5)


@pytest.mark.parametrize("term", ["single", "sub", "aux"])
def test_ablation_switch_removes_exactly_its_term(seed, term):
    model, batch, upper, counts = _setup(seed)
    full = MCEConfig(lambda_single=0.7, lambda_sub=1.3, lambda_aux=2.0)
    without = dataclasses.replace(full, **{f"use_{term}": False})
    result = MCEMethod(_inputs(counts, upper, seed), full).step(model, batch, 0)
    ablated = MCEMethod(_inputs(counts, upper, seed), without).step(model, batch, 0)
    assert f"l_{term}" not in ablated.logs
    expected = result.loss - getattr(full, f"lambda_{term}") * result.logs[f"l_{term}"]
    torch.testing.assert_close(ablated.loss, expected, rtol=1e-5, atol=1e-5)


def test_without_a_and_b_factors_are_one(seed):
    model, batch, upper, counts = _setup(seed)
    config = MCEConfig(use_a=False, use_b=False)
    logs = MCEMethod(_inputs(counts, None, seed), config).step(model, batch, 0).logs
    assert all(logs[f"A/{name}"] == 1.0 for name in model.modalities)
    assert not any(key.startswith("B/") for key in logs)


def test_factor_a_follows_presence_counts(seed):
    model, batch, upper, counts = _setup(seed)
    logs = MCEMethod(_inputs(counts, upper, seed), MCEConfig()).step(model, batch, 0).logs
    raw = torch.tensor([100 / 40, 100 / 90])
    assert logs["A/image"] == pytest.approx(float(raw[0] / raw.mean()))
    assert presence_counts(torch.tensor([1, 3, 2]), 2).tolist() == [2, 2]


def test_monte_carlo_step_runs_on_sampled_rows(seed):
    model, batch, upper, counts = _setup(seed)
    config = MCEConfig(shapley="mc", mc_k=4)
    result = MCEMethod(_inputs(counts, upper, seed), config).step(model, batch, 0)
    assert torch.isfinite(result.loss)
    assert result.logs["rows"] <= 4 * 2 * 13


def test_official_modes_run(seed):
    model, batch, upper, counts = _setup(seed)
    config = MCEConfig(shapley="official", weighting="official")
    logs = MCEMethod(_inputs(counts, upper, seed), config).step(model, batch, 0).logs
    assert all(logs[f"B/{name}"] >= 0 for name in model.modalities)
    # phi and B come from the authors' batch formula on the exact plan's rows.
    plan = coalition_plan(batch.present, 2)
    with torch.no_grad():
        h = model.encode(batch.inputs, batch.present)
        _, outputs = model.forward_rows(h, plan.rows)
    v = TASK.utility(outputs, batch.target[plan.samples])
    phi = official_batch_shapley(plan, v)
    for m, name in enumerate(model.modalities):
        present_m = int(((batch.present >> m) & 1).sum())
        assert logs[f"phi/{name}"] == pytest.approx(float(phi[m]), abs=1e-5)
        expected_b = max(float(upper[:, m].sum() - phi[m]), 0.0) / present_m
        assert logs[f"B/{name}"] == pytest.approx(expected_b, abs=1e-5)


def test_bad_upper_bounds_are_refused(seed):
    _, _, upper, counts = _setup(seed)
    with pytest.raises(ValueError, match=r"upper must have shape \[N_train, M\] = \[100, 2\]"):
        MCEMethod(_inputs(counts, upper[:13], seed), MCEConfig())
    with pytest.raises(ValueError, match="utilities in \\[0, 1\\]"):
        MCEMethod(_inputs(counts, torch.full((100, 2), float("nan")), seed), MCEConfig())
    with pytest.raises(ValueError, match="factor B needs the unimodal upper bounds"):
        MCEMethod(_inputs(counts, None, seed), MCEConfig())
