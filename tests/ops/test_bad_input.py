"""Bad input to every op is a ValueError naming the problem, never a crash."""

from __future__ import annotations

import pytest
import torch

from mce import ops
from mce.shapley import coalition_plan, presence_to_mask, shapley_values

PRESENT = torch.tensor([0b011, 0b101, 0b110])


def _rows_v():
    rows = ops.exact_plan(PRESENT, 3)
    return rows, torch.rand(rows.shape[0])


@pytest.mark.parametrize("op", ["exact", "mc"])
def test_bits_above_num_modalities(op):
    with pytest.raises(ValueError, match=r"present\[1\] = 9 sets bits outside the 3 modalities"):
        coalition_plan(torch.tensor([1, 0b1001]), 3, method=op)


@pytest.mark.parametrize("op", ["exact", "mc"])
def test_sample_with_no_modality(op):
    with pytest.raises(ValueError, match=r"present\[2\] is 0: sample 2 has no modality present"):
        coalition_plan(torch.tensor([1, 2, 0]), 2, method=op)


def test_negative_mask():
    with pytest.raises(ValueError, match="sets bits outside"):
        ops.exact_plan(torch.tensor([-1]), 3)


@pytest.mark.parametrize("num_modalities", [0, 32, 40])
def test_num_modalities_out_of_range(num_modalities):
    with pytest.raises(ValueError, match=r"num_modalities must be in \[1, 31\]"):
        ops.exact_plan(PRESENT, num_modalities)
    with pytest.raises(ValueError, match=r"num_modalities must be in \[1, 31\]"):
        ops.mc_plan(PRESENT, num_modalities, 4, 0)


def test_too_many_modalities_in_presence_matrix():
    with pytest.raises(ValueError, match="at most 31 modalities"):
        presence_to_mask(torch.ones(2, 32, dtype=torch.bool))


def test_wrong_dtype():
    with pytest.raises(ValueError, match="present must have dtype torch.int64, got torch.int32"):
        ops.exact_plan(PRESENT.int(), 3)
    rows, v = _rows_v()
    with pytest.raises(ValueError, match="v must have dtype torch.float32, got torch.float64"):
        ops.shapley_from_rows(rows, v.double(), PRESENT, 3)
    with pytest.raises(ValueError, match="h must have dtype"):
        ops.subset_gather(torch.zeros(3, 3, 2, dtype=torch.float64), rows)
    with pytest.raises(ValueError, match="rows must have dtype torch.int64"):
        ops.subset_gather(torch.zeros(3, 3, 2), rows.int())


def test_wrong_device():
    rows, v = _rows_v()
    with pytest.raises(ValueError, match="v is on meta"):
        ops.shapley_from_rows(rows, v.to("meta"), PRESENT, 3)
    with pytest.raises(ValueError, match="present is on meta"):
        ops.exact_plan(PRESENT.to("meta"), 3)


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU present: mixed-device check not run"
)
def test_mixed_devices():
    rows, v = _rows_v()
    with pytest.raises(ValueError, match="rows is on cpu but v is on cuda"):
        ops.shapley_from_rows(rows, v.cuda(), PRESENT.cuda(), 3)


def test_non_contiguous():
    rows, v = _rows_v()
    with pytest.raises(ValueError, match="present must be contiguous"):
        ops.exact_plan(torch.tensor([[1, 2], [3, 4]])[:, 0], 3)
    with pytest.raises(ValueError, match="h must be contiguous"):
        ops.subset_gather(torch.zeros(3, 2, 3).transpose(1, 2), rows)
    with pytest.raises(ValueError, match="v must be contiguous"):
        ops.shapley_from_rows(rows, torch.rand(rows.shape[0] * 2)[::2], PRESENT, 3)


def test_mismatched_lengths():
    rows, v = _rows_v()
    with pytest.raises(ValueError, match="v must have one value per row"):
        ops.shapley_from_rows(rows, v[:-1], PRESENT, 3)
    with pytest.raises(ValueError, match=r"coef must have shape \[R, M\]"):
        ops.shapley_from_rows(rows, v, PRESENT, 3, torch.zeros(rows.shape[0], 2))
    with pytest.raises(ValueError, match=r"rows must have shape \[R, 2\]"):
        ops.shapley_from_rows(torch.zeros(4, 3, dtype=torch.int64), torch.zeros(4), PRESENT, 3)
    with pytest.raises(ValueError, match=r"phi must have shape \[N_b, M\]"):
        ops.lce_factors(torch.tensor([1, 2, 3]), 5, PRESENT, torch.zeros(3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="upper must have 3 values"):
        ops.lce_factors(torch.tensor([1, 2, 3]), 5, PRESENT, torch.zeros(4), torch.zeros(3, 3))


def test_rows_that_do_not_fit_the_presence(device):
    _, v = _rows_v()
    present, v = PRESENT.to(device), v.to(device)
    rows = ops.exact_plan(present, 3)
    bad = rows.clone()
    bad[0, 1] = 0b100  # sample 0 has {0, 1} only
    with pytest.raises(
        ValueError, match=r"rows\[0\] holds subset 4, which is empty or not a subset"
    ):
        ops.shapley_from_rows(bad, v, present, 3)
    shuffled = rows.flip(0).contiguous()
    with pytest.raises(ValueError, match="grouped by sample in increasing order"):
        ops.shapley_from_rows(shuffled, v, present, 3)
    outside = rows.clone()
    outside[-1, 0] = 7
    with pytest.raises(ValueError, match="names sample 7, outside"):
        ops.shapley_from_rows(outside, v, present, 3)
    with pytest.raises(ValueError, match=r"is not a sample in \[0, 3\)"):
        ops.subset_gather(torch.zeros(3, 3, 2, device=device), outside)


def test_nan_utilities_and_factors(device):
    rows, v = _rows_v()
    v[2] = float("nan")
    with pytest.raises(ValueError, match="v holds NaN"):
        ops.shapley_from_rows(rows.to(device), v.to(device), PRESENT.to(device), 3)
    with pytest.raises(ValueError, match="must be finite"):
        ops.lce_factors(
            torch.tensor([1, 2, 3], device=device),
            5,
            PRESENT.to(device),
            torch.tensor([1.0, float("nan"), 0.0], device=device),
            torch.zeros(3, 3, device=device),
        )


def test_modality_never_present_in_dataset():
    with pytest.raises(ValueError, match="modality 1 is never present in the data set"):
        ops.lce_factors(torch.tensor([4, 0, 3]), 5, PRESENT, torch.zeros(3), torch.zeros(3, 3))


def test_bad_monte_carlo_arguments():
    with pytest.raises(ValueError, match="k \\(permutations per sample\\) must be an int"):
        ops.mc_plan(PRESENT, 3, 0, 0)
    with pytest.raises(ValueError, match="seed must be an int"):
        ops.mc_plan(PRESENT, 3, 4, 2**64)


def test_bad_utility_table_and_callable():
    with pytest.raises(ValueError, match=r"empty subset \(column 0\) must be 0"):
        shapley_values(PRESENT, torch.ones(3, 8))
    with pytest.raises(ValueError, match="needs 2\\^M columns"):
        shapley_values(PRESENT, torch.zeros(3, 6))
    with pytest.raises(ValueError, match="NaN"):
        shapley_values(PRESENT, torch.full((3, 8), float("nan")))
    with pytest.raises(ValueError, match="num_modalities is required"):
        shapley_values(PRESENT, lambda rows: torch.zeros(rows.shape[0]))
    with pytest.raises(ValueError, match=r"utility\(rows\) must return a Tensor\[9\]"):
        shapley_values(PRESENT, lambda rows: torch.zeros(2), num_modalities=3)
    with pytest.raises(ValueError, match="method must be 'exact' or 'mc'"):
        shapley_values(PRESENT, torch.zeros(3, 8), method="kernel")
