"""Shapley values: exact vs Monte Carlo K, kernels vs the torch reference vs a Python loop.

Run: ``pytest bench/bench_shapley.py --benchmark-only``. Presence probability 0.7 per modality.
The Python loop is measured only where it finishes in seconds (its cost grows as N a 2^a).
"""

from __future__ import annotations

import pytest
import torch
from conftest import CUDA_PRESENT, NO_CUDA

from mce import ops
from mce.ops.reference import shapley_brute_force, shapley_from_rows_reference
from mce.science.shapley import coalition_plan, plan_shapley

MODALITIES = [2, 3, 4, 8, 12, 16]
SAMPLES = [1, 128, 1024]
METHODS = ["exact", "mc10", "mc50", "mc100", "mc200"]
PRESENT_PROBABILITY = 0.7
NAIVE_BUDGET = 300_000  # Python-loop iterations (N * a * 2^(a-1)) worth measuring

IMPLEMENTATIONS = [
    "kernel-cpu",
    pytest.param("kernel-cuda", marks=pytest.mark.skipif(not CUDA_PRESENT, reason=NO_CUDA)),
    "reference",
    "python-loop",
]


def _present(num_samples: int, num_modalities: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(num_samples * 100 + num_modalities)
    presence = torch.rand(num_samples, num_modalities, generator=generator) < PRESENT_PROBABILITY
    presence[:, 0] |= ~presence.any(1)
    bits = 1 << torch.arange(num_modalities, dtype=torch.int64)
    return (presence.to(torch.int64) * bits).sum(1)


def _plan_args(method: str) -> dict:
    return {"method": "exact"} if method == "exact" else {"method": "mc", "k": int(method[2:])}


def _naive_cost(present: torch.Tensor) -> int:
    sizes = ops.popcount(present)
    return int((sizes * (1 << sizes)).sum()) // 2


def _cases():
    for num_modalities in MODALITIES:
        for num_samples in SAMPLES:
            for method in METHODS:
                yield num_modalities, num_samples, method


def _setup(num_modalities, num_samples, method, device):
    present = _present(num_samples, num_modalities).to(device)
    plan = coalition_plan(present, num_modalities, seed=0, **_plan_args(method))
    v = torch.rand(plan.num_rows, generator=torch.Generator().manual_seed(1)).to(device)
    return present, plan, v


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(("num_modalities", "num_samples", "method"), list(_cases()))
def test_aggregation(run, impl, num_modalities, num_samples, method):
    """Shapley values from the utilities of an existing plan's rows."""
    device = "cuda" if impl == "kernel-cuda" else "cpu"
    present, plan, v = _setup(num_modalities, num_samples, method, device)
    if impl.startswith("kernel"):
        run(plan_shapley, plan, v)
    elif impl == "reference":
        run(shapley_from_rows_reference, plan.rows, v, present, num_modalities, plan.coef)
    else:
        if method != "exact" or _naive_cost(present) > NAIVE_BUDGET:
            pytest.skip(
                "the Python loop implements Eq. 5 exactly and is measured only on small exact cases"
            )
        table = dict(zip(map(tuple, plan.rows.tolist()), v.tolist()))
        masks = present.tolist()
        run(shapley_brute_force, masks, lambda n, s: table[(n, s)], num_modalities)


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA_PRESENT, reason=NO_CUDA))],
)
@pytest.mark.parametrize(("num_modalities", "num_samples", "method"), list(_cases()))
def test_plan_and_aggregation(run, device, num_modalities, num_samples, method):
    """A whole Shapley step but the model: plan the rows, then aggregate their utilities."""
    present, plan, v = _setup(num_modalities, num_samples, method, device)

    def step():
        fresh = coalition_plan(present, num_modalities, seed=0, **_plan_args(method))
        return plan_shapley(fresh, v)

    run(step)
