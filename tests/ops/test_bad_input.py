"""Bad input to every op is a ValueError naming the problem, never a crash."""

from __future__ import annotations

import math

import pytest
import torch

from mce import ops
from mce.ops import _checks
from mce.science.shapley import coalition_plan, presence_to_mask, shapley_values

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


@pytest.mark.parametrize(
    ("present", "num_modalities", "message"),
    [
        ([-5], 31, r"present\[0\] = -5 sets bits outside the 31 modalities"),
        ([3, 2**31], 31, r"present\[1\] = 2147483648 sets bits outside the 31 modalities"),
        ([1, 0b1001], 3, r"present\[1\] = 9 sets bits outside the 3 modalities"),
        ([1, 0], 31, r"present\[1\] is 0: sample 1 has no modality present"),
    ],
    ids=["negative", "bit 31", "bit 3 of 3", "empty"],
)
def test_exact_plan_size_refuses_bad_masks(present, num_modalities, message):
    with pytest.raises(ValueError, match=message):
        ops.exact_plan_size(torch.tensor(present), num_modalities)


def test_exact_plan_size_refuses_what_is_not_a_mask_tensor():
    with pytest.raises(ValueError, match="present must be a torch.Tensor, got list"):
        ops.exact_plan_size([-5])
    with pytest.raises(ValueError, match="present must have dtype torch.int64"):
        ops.exact_plan_size(PRESENT.int())
    with pytest.raises(ValueError, match=r"num_modalities must be in \[1, 31\]"):
        ops.exact_plan_size(PRESENT, 0)
    assert ops.exact_plan_size(PRESENT, 3) == 9


# --- Outputs too large to allocate -------------------------------------------------------------


def _refuse_allocations(monkeypatch, refused) -> None:
    """Output buffers for which ``refused(shape, dtype)`` holds fail as torch's allocator fails
    when memory runs out; the others are allocated as usual."""
    allocate = _checks.new_output

    def new_output(shape, dtype, device):
        if refused(tuple(shape), dtype):
            nbytes = math.prod(shape) * dtype.itemsize
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                f"allocate memory: you tried to allocate {nbytes} bytes. Error code 12"
            )
        return allocate(shape, dtype, device)

    monkeypatch.setattr(_checks, "new_output", new_output)


def test_an_exact_plan_too_large_to_allocate_names_its_rows_and_bytes_and_suggests_mc(
    monkeypatch,
):
    _refuse_allocations(monkeypatch, lambda shape, dtype: math.prod(shape) > 1 << 20)
    present = torch.full((4,), (1 << 31) - 1, dtype=torch.int64)  # 4 (2^31 - 1) rows
    with pytest.raises(
        ValueError,
        match=r"^the exact plan of 8589934588 rows: a Tensor\[8589934588, 2\] torch.int64 of "
        r"137438953408 bytes could not be allocated on cpu; use Monte Carlo \(method='mc'",
    ):
        ops.exact_plan(present, 31, max_rows=1 << 40)


def test_an_exact_plan_over_max_rows_names_its_bytes():
    with pytest.raises(ValueError, match=r"needs 15 rows \(240 bytes; .*max_rows=10; use Monte"):
        ops.exact_plan(torch.tensor([0b1111]), 4, max_rows=10)


def _op_calls():
    """Each op and arguments made before allocations are refused."""
    rows, v = _rows_v()
    counts, upper = torch.tensor([1, 2, 3]), torch.zeros(3)
    return {
        "exact_plan": (ops.exact_plan, (PRESENT, 3)),
        "mc_plan": (ops.mc_plan, (PRESENT, 3, 5, 0)),
        "subset_gather": (ops.subset_gather, (torch.zeros(3, 3, 2), rows)),
        "shapley_from_rows": (ops.shapley_from_rows, (rows, v, PRESENT, 3)),
        "lce_factors": (ops.lce_factors, (counts, 5, PRESENT, upper, torch.zeros(3, 3))),
    }


_REFUSED_OUTPUT = {
    "exact_plan": r"^the exact plan of 9 rows: a Tensor\[9, 2\] torch.int64 of 144 bytes",
    "mc_plan": r"^the Monte Carlo plan's scratch for 30 prefix coalitions \(k=5 permutations x "
    r"\|A_n\| per sample\): a Tensor\[60\] torch.int64 of 480 bytes could not be allocated "
    r"on cpu; use fewer permutations \(k\) or a smaller batch$",
    "subset_gather": r"^subset_gather's output for 9 rows: a Tensor\[9, 3, 2\] torch.float32 of "
    r"216 bytes could not be allocated on cpu; evaluate fewer rows",
    "shapley_from_rows": r"^the Shapley values of 3 samples: a Tensor\[3, 3\] torch.float32 of "
    r"36 bytes",
    "lce_factors": r"^factor A: a Tensor\[3\] torch.float32 of 12 bytes could not be allocated",
}


@pytest.mark.parametrize("op", list(_REFUSED_OUTPUT))
def test_every_op_names_an_output_it_cannot_allocate(monkeypatch, op):
    run, args = _op_calls()[op]
    _refuse_allocations(monkeypatch, lambda shape, dtype: True)
    with pytest.raises(ValueError, match=_REFUSED_OUTPUT[op]):
        run(*args)


def test_a_monte_carlo_plan_whose_rows_cannot_be_allocated_names_them(monkeypatch):
    _refuse_allocations(monkeypatch, lambda shape, dtype: len(shape) == 2)  # rows and coef
    with pytest.raises(
        ValueError,
        match=r"^the Monte Carlo plan of 9 rows: a Tensor\[9, 2\] torch.int64 of 144 bytes "
        r"could not be allocated on cpu; use fewer permutations",
    ):
        ops.mc_plan(PRESENT, 3, 40, 0)  # 40 permutations of 2 modalities: every subset


def test_a_gather_gradient_that_cannot_be_allocated_names_it(monkeypatch):
    h = torch.zeros(3, 3, 2, requires_grad=True)
    out = ops.subset_gather(h, ops.exact_plan(PRESENT, 3))
    _refuse_allocations(monkeypatch, lambda shape, dtype: shape == (3, 3, 2))
    with pytest.raises(
        ValueError,
        match=r"^subset_gather's gradient for 3 samples: a Tensor\[3, 3, 2\] torch.float32 of "
        r"72 bytes could not be allocated on cpu$",
    ):
        out.sum().backward()


def test_a_size_whose_bytes_overflow_is_named_not_allocated():
    # torch refuses before allocating anything: 2^63 elements of 8 bytes overflow int64
    with pytest.raises(
        ValueError,
        match=r"^the test buffer: a Tensor\[4611686018427387904, 2\] torch.int64 of "
        r"73786976294838206464 bytes could not be allocated on cpu$",
    ):
        _checks.allocate("the test buffer", (1 << 62, 2), torch.int64, torch.device("cpu"))
