"""Coalition plans: kernels against the pure-torch reference, plan structure, MC properties."""

from __future__ import annotations

import pytest
import torch
from oracles import random_present

from mce import ops
from mce.ops.reference import exact_plan_reference, mc_plan_reference


@pytest.mark.parametrize("num_modalities", [1, 2, 3, 5, 8, 11])
@pytest.mark.parametrize("num_samples", [1, 7, 33])
def test_exact_plan_matches_reference(device, seed, num_modalities, num_samples):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, num_samples, num_modalities).to(device)
    rows = ops.exact_plan(present, num_modalities)
    expected = exact_plan_reference(present.cpu(), num_modalities)
    assert torch.equal(rows.cpu(), expected)
    assert rows.shape[0] == ops.exact_plan_size(present)


def test_exact_plan_holds_every_non_empty_subset_once():
    present = torch.tensor([0b1011, 0b0001, 0b1111])
    rows = ops.exact_plan(present, 4)
    for n, mask in enumerate(present.tolist()):
        subsets = rows[rows[:, 0] == n, 1].tolist()
        expected = [s for s in range(1, 16) if s & mask == s]
        assert subsets == expected


def test_exact_plan_refuses_too_many_rows_and_suggests_monte_carlo():
    present = torch.full((4,), (1 << 31) - 1, dtype=torch.int64)
    with pytest.raises(ValueError, match="Monte Carlo"):
        ops.exact_plan(present, 31)
    with pytest.raises(ValueError, match="max_rows=10"):
        ops.exact_plan(torch.tensor([0b1111]), 4, max_rows=10)


def test_exact_plan_of_empty_batch_is_empty(device):
    rows = ops.exact_plan(torch.empty(0, dtype=torch.int64, device=device), 3)
    assert rows.shape == (0, 2)


@pytest.mark.parametrize("num_modalities", [1, 2, 4, 9, 16, 31])
@pytest.mark.parametrize("k", [1, 3, 17])
def test_mc_plan_matches_reference_bit_for_bit(device, seed, num_modalities, k):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, 13, num_modalities).to(device)
    rows, coef = ops.mc_plan(present, num_modalities, k, seed)
    expected_rows, expected_coef = mc_plan_reference(present.cpu(), num_modalities, k, seed)
    assert torch.equal(rows.cpu(), expected_rows)
    assert torch.equal(coef.cpu(), expected_coef)


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU present: CPU/CUDA plan identity not checked"
)
def test_mc_plan_identical_on_cpu_and_cuda(seed):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, 129, 12)
    cpu_rows, cpu_coef = ops.mc_plan(present, 12, 50, seed)
    cuda_rows, cuda_coef = ops.mc_plan(present.cuda(), 12, 50, seed)
    assert torch.equal(cpu_rows, cuda_rows.cpu())
    assert torch.equal(cpu_coef, cuda_coef.cpu())


def test_mc_plan_is_reproducible_and_seed_dependent(seed):
    present = random_present(torch.Generator().manual_seed(seed), 20, 6)
    first = ops.mc_plan(present, 6, 5, seed)
    again = ops.mc_plan(present, 6, 5, seed)
    other = ops.mc_plan(present, 6, 5, seed + 1)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not (
        first[0].shape == other[0].shape
        and torch.equal(first[0], other[0])
        and torch.equal(first[1], other[1])
    )


def test_mc_plan_rows_are_distinct_prefix_coalitions(seed):
    present = random_present(torch.Generator().manual_seed(seed), 25, 7)
    k = 9
    rows, coef = ops.mc_plan(present, 7, k, seed)
    keys = rows[:, 0] * (1 << 32) + rows[:, 1]
    assert torch.equal(keys, torch.unique(keys)), "rows must be distinct and sorted"
    full = rows[:, 1] == present[rows[:, 0]]
    # The full set closes every permutation: its coefficients sum to K / K = 1; any other
    # prefix gains +1 for the modality that joined it and -1 for the next one: sum 0.
    sums = coef.sum(1)
    assert torch.allclose(sums[full], torch.ones_like(sums[full]))
    assert torch.allclose(sums[~full], torch.zeros_like(sums[~full]), atol=1e-6)
    assert int(full.sum()) == present.shape[0]
    assert (rows.shape[0] <= (k * ops.popcount(present)).sum()).item()


def test_mc_plan_covers_every_coalition_of_two_modalities(device):
    present = torch.tensor([0b101, 0b110, 0b011], device=device)
    rows, coef = ops.mc_plan(present, 3, 40, seed=7)
    for n, mask in enumerate(present.tolist()):
        subsets = sorted(rows[rows[:, 0] == n, 1].tolist())
        assert subsets == sorted(s for s in range(1, 8) if s & mask == s)


def test_mc_plan_of_one_modality_is_the_singleton():
    rows, coef = ops.mc_plan(torch.tensor([0b100]), 3, 10, seed=0)
    assert rows.tolist() == [[0, 4]]
    assert coef.tolist() == [[0.0, 0.0, 1.0]]


def test_popcount_matches_python(seed):
    generator = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, 2**32, (5000,), generator=generator, dtype=torch.int64)
    masks[:3] = torch.tensor([0, 2**32 - 1, 2**31 - 1])
    expected = torch.tensor([bin(m).count("1") for m in masks.tolist()])
    assert torch.equal(ops.popcount(masks), expected)
