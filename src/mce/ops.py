"""The torch face of the mce kernels.

Every op is a ``torch.library.custom_op`` with a CPU kernel, a CUDA kernel (when built), a fake
kernel for tracing and, where it carries gradients, autograd. The public functions below check
dtypes, shapes, devices and values and raise ``ValueError`` naming the problem; the kernels take
raw pointers. Pure-torch twins of every op live in :mod:`mce.reference`.

Conventions: ``present`` is an int64 bitmask per sample (bit m set when modality m is present,
M <= 31); ``rows`` is int64 ``[R, 2]`` holding (sample index, subset bitmask), grouped by sample
in increasing sample order, as the plans produce them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mce import _ext

__all__ = [
    "MAX_MODALITIES",
    "DEFAULT_MAX_ROWS",
    "exact_plan",
    "exact_plan_size",
    "mc_plan",
    "shapley_from_rows",
    "subset_gather",
    "lce_factors",
    "popcount",
]

MAX_MODALITIES = 31
"""Largest number of modalities a presence bitmask can carry."""

DEFAULT_MAX_ROWS = 1 << 26
"""Row budget of an exact plan (64 Mi rows: 1 GiB of rows before any forward pass)."""

_FLOAT_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_tensor(
    name: str,
    value: object,
    dtypes: Sequence[torch.dtype],
    ndim: int,
) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in dtypes:
        expected = " or ".join(str(d) for d in dtypes)
        raise ValueError(f"{name} must have dtype {expected}, got {value.dtype}")
    if value.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {list(value.shape)}")
    if not value.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous() first)")
    if value.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} is on {value.device}; mce kernels run on cpu or cuda only")
    return value


def _check_same_device(reference_name: str, reference: Tensor, **others: Tensor | None) -> None:
    for name, other in others.items():
        if other is not None and other.device != reference.device:
            raise ValueError(
                f"{name} is on {other.device} but {reference_name} is on {reference.device}"
            )


def _check_num_modalities(num_modalities: int) -> None:
    if isinstance(num_modalities, bool) or not isinstance(num_modalities, int):
        raise ValueError(f"num_modalities must be an int, got {type(num_modalities).__name__}")
    if not 1 <= num_modalities <= MAX_MODALITIES:
        raise ValueError(f"num_modalities must be in [1, {MAX_MODALITIES}], got {num_modalities}")


def _first(flags: Tensor) -> int:
    """Index of the first True in a 1-D boolean tensor (callers know there is one)."""
    return int(torch.nonzero(flags)[0, 0])


def _check_present_values(present: Tensor, num_modalities: int) -> None:
    """Every sample has at least one modality and no bit at or above num_modalities."""
    if present.numel() == 0:
        return
    empty = present == 0
    out_of_range = (present < 0) | (present >= (1 << num_modalities))
    flags = torch.stack([empty.any(), out_of_range.any()]).tolist()
    if flags[0]:
        first = _first(empty)
        raise ValueError(
            f"present[{first}] is 0: sample {first} has no modality present; drop samples with "
            "every modality missing before planning"
        )
    if flags[1]:
        first = _first(out_of_range)
        raise ValueError(
            f"present[{first}] = {int(present[first])} sets bits outside the "
            f"{num_modalities} modalities (valid masks are 1 .. {(1 << num_modalities) - 1})"
        )


def _check_rows_values(rows: Tensor, present: Tensor) -> None:
    """Rows are grouped by sample in increasing order and hold non-empty subsets of present."""
    if rows.shape[0] == 0:
        return
    samples, subsets = rows[:, 0], rows[:, 1]
    num_samples = present.shape[0]
    bad_sample = (samples < 0) | (samples >= num_samples)
    if bool(bad_sample.any()):
        first = _first(bad_sample)
        raise ValueError(
            f"rows[{first}] names sample {int(samples[first])}, outside [0, {num_samples})"
        )
    unsorted = samples[1:] < samples[:-1]
    not_subset = (subsets <= 0) | ((subsets & ~present[samples]) != 0)
    flags = torch.stack([unsorted.any(), not_subset.any()]).tolist()
    if flags[0]:
        first = _first(unsorted) + 1
        raise ValueError(
            f"rows must be grouped by sample in increasing order; rows[{first}] names sample "
            f"{int(samples[first])} after sample {int(samples[first - 1])}"
        )
    if flags[1]:
        first = _first(not_subset)
        raise ValueError(
            f"rows[{first}] holds subset {int(subsets[first])}, which is empty or not a subset "
            f"of present[{int(samples[first])}] = {int(present[samples[first]])}"
        )


def _row_offsets(rows: Tensor, num_samples: int) -> Tensor:
    """offsets[n] = index of sample n's first row; offsets[N] = R (rows grouped by sample)."""
    boundaries = torch.arange(num_samples + 1, device=rows.device, dtype=torch.int64)
    return torch.searchsorted(rows[:, 0].contiguous(), boundaries).to(torch.int64)


def popcount(masks: Tensor) -> Tensor:
    """Number of set bits of each int64 mask in [0, 2^32) (branch-free SWAR count)."""
    x = masks - ((masks >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) >> 24) & 0xFF


def _exclusive_cumsum(counts: Tensor) -> Tensor:
    offsets = torch.zeros(counts.shape[0] + 1, dtype=torch.int64, device=counts.device)
    torch.cumsum(counts, dim=0, out=offsets[1:])
    return offsets


def _new_output(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Uninitialised output buffer; every kernel writes each element it returns."""
    return torch.empty(shape, dtype=dtype, device=device)


def _launch(kernel: str, device: torch.device, *args: int) -> None:
    """Run ``kernel`` of the CPU extension, or of the CUDA extension on the current stream of
    ``device`` (the CUDA twins take the same arguments plus the stream)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device).cuda_stream
            getattr(_ext.cuda_kernels(), kernel)(*args, stream)
    else:
        getattr(_ext.cpu_kernels(), kernel)(*args)


def _ptr(tensor: Tensor | None) -> int:
    return 0 if tensor is None else tensor.data_ptr()


# --------------------------------------------------------------------------------------------
# exact_plan
# --------------------------------------------------------------------------------------------


def exact_plan_size(present: Tensor) -> int:
    """Rows of the exact plan of ``present``: sum over samples of 2^|A_n| - 1."""
    return int(((1 << popcount(present)) - 1).sum())


@torch.library.custom_op("mce::exact_plan", mutates_args=(), device_types=("cpu", "cuda"))
def _exact_plan_op(present: Tensor, row_offsets: Tensor, num_rows: int) -> Tensor:
    rows = _new_output((num_rows, 2), torch.int64, present.device)
    if num_rows:
        _launch(
            "exact_plan",
            present.device,
            present.data_ptr(),
            row_offsets.data_ptr(),
            present.shape[0],
            num_rows,
            rows.data_ptr(),
        )
    return rows


@_exact_plan_op.register_fake
def _(present: Tensor, row_offsets: Tensor, num_rows: int) -> Tensor:
    return present.new_empty((num_rows, 2))


def exact_plan(present: Tensor, num_modalities: int, max_rows: int = DEFAULT_MAX_ROWS) -> Tensor:
    """Rows (n, S) of every non-empty subset S of each sample's present set A_n.

    Rows are grouped by sample, subsets in increasing bitmask order within a sample.

    Args:
        present: Tensor[N] int64 bitmask of the modalities present in each sample.
        num_modalities: M, the number of modalities (1 .. 31).
        max_rows: refuse plans with more rows than this.

    Returns:
        Tensor[R, 2] int64 with R = sum_n (2^|A_n| - 1).

    Raises:
        ValueError: on a bad mask, or when the plan would exceed ``max_rows``.
    """
    _check_num_modalities(num_modalities)
    _check_tensor("present", present, (torch.int64,), 1)
    _check_present_values(present, num_modalities)
    counts = (1 << popcount(present)) - 1
    num_rows = int(counts.sum()) if present.numel() else 0
    if num_rows > max_rows:
        raise ValueError(
            f"the exact plan needs {num_rows} rows (sum over samples of 2^|A_n| - 1), more than "
            f"max_rows={max_rows}; use Monte Carlo (method='mc', k permutations) instead, which "
            "needs at most k * |A_n| rows per sample"
        )
    return _exact_plan_op(present, _exclusive_cumsum(counts), num_rows)


# --------------------------------------------------------------------------------------------
# mc_plan
# --------------------------------------------------------------------------------------------


def _mc_plan_impl(present: Tensor, num_modalities: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    device = present.device
    scratch_offsets = _exclusive_cumsum(popcount(present) * k)
    scratch = _new_output((2 * int(scratch_offsets[-1]),), torch.int64, device)  # + sort space
    distinct = _new_output(present.shape, torch.int64, device)
    _launch(
        "mc_plan_prepare",
        device,
        present.data_ptr(),
        scratch_offsets.data_ptr(),
        present.shape[0],
        k,
        seed & 0xFFFFFFFFFFFFFFFF,
        scratch.data_ptr(),
        distinct.data_ptr(),
    )
    row_offsets = _exclusive_cumsum(distinct)
    num_rows = int(row_offsets[-1])
    rows = _new_output((num_rows, 2), torch.int64, device)
    coef = _new_output((num_rows, num_modalities), torch.float32, device)
    _launch(
        "mc_plan_emit",
        device,
        scratch.data_ptr(),
        scratch_offsets.data_ptr(),
        row_offsets.data_ptr(),
        present.shape[0],
        k,
        num_modalities,
        rows.data_ptr(),
        coef.data_ptr(),
    )
    return rows, coef


@torch.library.custom_op("mce::mc_plan", mutates_args=(), device_types=("cpu", "cuda"))
def _mc_plan_op(present: Tensor, num_modalities: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    return _mc_plan_impl(present, num_modalities, k, seed)


@_mc_plan_op.register_fake
def _(present: Tensor, num_modalities: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    num_rows = torch.library.get_ctx().new_dynamic_size()
    return (
        present.new_empty((num_rows, 2)),
        present.new_empty((num_rows, num_modalities), dtype=torch.float32),
    )


def mc_plan(present: Tensor, num_modalities: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """Monte Carlo coalition plan: K random permutations of each sample's present set.

    Every distinct prefix coalition of the K permutations of sample n becomes one row, and
    ``coef[r, m]`` counts how often m joined coalition S_r minus how often m was the next to
    join it, divided by K; hence the permutation estimate of the Shapley value is
    ``phi[n, m] = sum_r coef[r, m] * v(S_r)`` (v(empty) = 0). Permutations come from a Philox
    counter-based generator keyed by ``seed``, so the CPU and CUDA plans are identical.

    Args:
        present: Tensor[N] int64 presence bitmasks.
        num_modalities: M (1 .. 31).
        k: permutations per sample (>= 1).
        seed: any integer; the same seed gives the same plan on every device.

    Returns:
        rows Tensor[R, 2] int64 grouped by sample (subsets increasing), coef Tensor[R, M] float32.
    """
    _check_num_modalities(num_modalities)
    _check_tensor("present", present, (torch.int64,), 1)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < 2**31:
        raise ValueError(f"k (permutations per sample) must be an int in [1, 2^31), got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
        raise ValueError(f"seed must be an int in [-2^63, 2^63), got {seed!r}")
    _check_present_values(present, num_modalities)
    return _mc_plan_op(present, num_modalities, k, seed)


# --------------------------------------------------------------------------------------------
# shapley_from_rows
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("mce::shapley_from_rows", mutates_args=(), device_types="cpu")
def _shapley_op(
    rows: Tensor, v: Tensor, present: Tensor, num_modalities: int, coef: Tensor | None
) -> Tensor:
    # The CPU kernel checks rows and v itself as it reads them and needs no row offsets; the CUDA
    # kernel (one block per sample) needs them, and its inputs are checked here first.
    phi = _new_output((present.shape[0], num_modalities), torch.float32, v.device)
    _launch(
        "shapley_from_rows",
        v.device,
        rows.data_ptr(),
        v.data_ptr(),
        _ptr(coef),
        present.data_ptr(),
        rows.shape[0],
        present.shape[0],
        num_modalities,
        phi.data_ptr(),
    )
    return phi


@_shapley_op.register_kernel("cuda")
def _shapley_cuda(
    rows: Tensor, v: Tensor, present: Tensor, num_modalities: int, coef: Tensor | None
) -> Tensor:
    _check_rows_values(rows, present)
    if not bool(torch.isfinite(v).all()):
        raise ValueError("v holds NaN or infinite utilities")
    phi = _new_output((present.shape[0], num_modalities), torch.float32, v.device)
    offsets = _row_offsets(rows, present.shape[0])
    _launch(
        "shapley_from_rows",
        v.device,
        rows.data_ptr(),
        v.data_ptr(),
        _ptr(coef),
        present.data_ptr(),
        offsets.data_ptr(),
        present.shape[0],
        num_modalities,
        phi.data_ptr(),
    )
    return phi


@_shapley_op.register_fake
def _(rows: Tensor, v: Tensor, present: Tensor, num_modalities: int, coef: Tensor | None) -> Tensor:
    return v.new_empty((present.shape[0], num_modalities))


def shapley_from_rows(
    rows: Tensor,
    v: Tensor,
    present: Tensor,
    num_modalities: int,
    coef: Tensor | None = None,
) -> Tensor:
    """Per-sample Shapley values from the utilities of a plan's rows.

    Exact plans (``coef`` None) use Eq. 5 with the sample's own present count a = |A_n|::

        phi[n, m] = sum_{S in rows of n, m in S}      w(|S| - 1, a) v(S)
                  - sum_{S in rows of n, m in A_n\\S} w(|S|, a)     v(S),
        w(s, a) = s! (a - s - 1)! / a!,   v(empty) = 0.

    Monte Carlo plans pass their ``coef``: ``phi[n, m] = sum_r coef[r, m] v[r]``. Modalities
    absent from a sample get exactly 0. Missing rows count as v = 0.

    Args:
        rows: Tensor[R, 2] int64 (sample, subset), grouped by sample in increasing order.
        v: Tensor[R] float32 utilities (detached; no gradient flows through Shapley values).
        present: Tensor[N] int64 presence bitmasks.
        num_modalities: M (1 .. 31).
        coef: Tensor[R, M] float32 Monte Carlo coefficients, or None for exact weights.

    Returns:
        phi: Tensor[N, M] float32.
    """
    _check_num_modalities(num_modalities)
    _check_tensor("rows", rows, (torch.int64,), 2)
    _check_tensor("v", v, (torch.float32,), 1)
    _check_tensor("present", present, (torch.int64,), 1)
    if rows.shape[1] != 2:
        raise ValueError(f"rows must have shape [R, 2], got {list(rows.shape)}")
    if v.shape[0] != rows.shape[0]:
        raise ValueError(
            f"v must have one value per row: {v.shape[0]} values for {rows.shape[0]} rows"
        )
    if coef is not None:
        _check_tensor("coef", coef, (torch.float32,), 2)
        if tuple(coef.shape) != (rows.shape[0], num_modalities):
            raise ValueError(
                f"coef must have shape [R, M] = [{rows.shape[0]}, {num_modalities}], "
                f"got {list(coef.shape)}"
            )
    _check_same_device("v", v, rows=rows, present=present, coef=coef)
    if v.requires_grad:
        v = v.detach()
    _check_present_values(present, num_modalities)
    return _shapley_op(rows, v, present, num_modalities, coef)


# --------------------------------------------------------------------------------------------
# subset_gather (+ backward)
# --------------------------------------------------------------------------------------------


def _gather_kernel_call(h: Tensor, rows: Tensor) -> Tensor:
    num_modalities, features = h.shape[1], h.shape[2]
    out = _new_output((rows.shape[0], num_modalities, features), h.dtype, h.device)
    _launch(
        "subset_gather",
        h.device,
        h.data_ptr(),
        rows.data_ptr(),
        rows.shape[0],
        num_modalities,
        features,
        _FLOAT_DTYPES[h.dtype],
        out.data_ptr(),
    )
    return out


def _gather_backward_kernel_call(grad: Tensor, rows: Tensor, num_samples: int) -> Tensor:
    num_modalities, features = grad.shape[1], grad.shape[2]
    grad = grad.contiguous()
    grad_h = _new_output((num_samples, num_modalities, features), grad.dtype, grad.device)
    offsets = _row_offsets(rows, num_samples)
    _launch(
        "subset_gather_backward",
        grad.device,
        grad.data_ptr(),
        rows.data_ptr(),
        offsets.data_ptr(),
        num_samples,
        num_modalities,
        features,
        _FLOAT_DTYPES[grad.dtype],
        grad_h.data_ptr(),
    )
    return grad_h


@torch.library.custom_op("mce::subset_gather", mutates_args=(), device_types=("cpu", "cuda"))
def _subset_gather_op(h: Tensor, rows: Tensor) -> Tensor:
    return _gather_kernel_call(h, rows)


@_subset_gather_op.register_fake
def _(h: Tensor, rows: Tensor) -> Tensor:
    return h.new_empty((rows.shape[0], h.shape[1], h.shape[2]))


@torch.library.custom_op(
    "mce::subset_gather_backward", mutates_args=(), device_types=("cpu", "cuda")
)
def _subset_gather_backward_op(grad: Tensor, rows: Tensor, num_samples: int) -> Tensor:
    return _gather_backward_kernel_call(grad, rows, num_samples)


@_subset_gather_backward_op.register_fake
def _(grad: Tensor, rows: Tensor, num_samples: int) -> Tensor:
    return grad.new_empty((num_samples, grad.shape[1], grad.shape[2]))


def _gather_setup_context(ctx: object, inputs: tuple, output: Tensor) -> None:
    h, rows = inputs
    ctx.save_for_backward(rows)
    ctx.num_samples = h.shape[0]


def _gather_backward(ctx: object, grad: Tensor) -> tuple[Tensor, None]:
    (rows,) = ctx.saved_tensors
    return _subset_gather_backward_op(grad.contiguous(), rows, ctx.num_samples), None


def _gather_backward_setup_context(ctx: object, inputs: tuple, output: Tensor) -> None:
    _, rows, _ = inputs
    ctx.save_for_backward(rows)


def _gather_double_backward(ctx: object, grad: Tensor) -> tuple[Tensor, None, None]:
    (rows,) = ctx.saved_tensors
    return _subset_gather_op(grad.contiguous(), rows), None, None


_subset_gather_op.register_autograd(_gather_backward, setup_context=_gather_setup_context)
_subset_gather_backward_op.register_autograd(
    _gather_double_backward, setup_context=_gather_backward_setup_context
)


def subset_gather(h: Tensor, rows: Tensor) -> Tensor:
    """Per-row features with the modalities outside each row's subset zeroed.

    ``X[r, m] = h[n_r, m] if m in S_r else 0``. The backward sums the rows' gradients back
    into their samples (a segmented reduction, deterministic).

    Args:
        h: Tensor[N, M, F] float32, float16 or bfloat16 per-sample modality features.
        rows: Tensor[R, 2] int64 (sample, subset) grouped by sample in increasing order.

    Returns:
        X: Tensor[R, M, F] of h's dtype.
    """
    _check_tensor("h", h, tuple(_FLOAT_DTYPES), 3)
    _check_tensor("rows", rows, (torch.int64,), 2)
    if rows.shape[1] != 2:
        raise ValueError(f"rows must have shape [R, 2], got {list(rows.shape)}")
    _check_same_device("h", h, rows=rows)
    num_samples, num_modalities = h.shape[0], h.shape[1]
    _check_num_modalities(num_modalities)
    if rows.shape[0]:
        samples, subsets = rows[:, 0], rows[:, 1]
        bad = (samples < 0) | (samples >= num_samples) | (subsets <= 0)
        bad |= subsets >= (1 << num_modalities)
        if bool(bad.any()):
            first = _first(bad)
            raise ValueError(
                f"rows[{first}] = ({int(samples[first])}, {int(subsets[first])}) is not a sample "
                f"in [0, {num_samples}) with a non-empty subset of the {num_modalities} modalities"
            )
        if bool((samples[1:] < samples[:-1]).any()):
            raise ValueError("rows must be grouped by sample in increasing order")
    return _subset_gather_op(h, rows)


# --------------------------------------------------------------------------------------------
# lce_factors
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("mce::lce_factors", mutates_args=(), device_types=("cpu", "cuda"))
def _lce_op(
    dataset_counts: Tensor, dataset_size: int, batch_present: Tensor, upper: Tensor, phi: Tensor
) -> tuple[Tensor, Tensor]:
    factor_a = _new_output(upper.shape, upper.dtype, upper.device)
    factor_b = _new_output(upper.shape, upper.dtype, upper.device)
    _launch(
        "lce_factors",
        upper.device,
        dataset_counts.data_ptr(),
        dataset_size,
        batch_present.data_ptr(),
        batch_present.shape[0],
        upper.data_ptr(),
        phi.data_ptr(),
        upper.shape[0],
        factor_a.data_ptr(),
        factor_b.data_ptr(),
    )
    return factor_a, factor_b


@_lce_op.register_fake
def _(
    dataset_counts: Tensor, dataset_size: int, batch_present: Tensor, upper: Tensor, phi: Tensor
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(upper), torch.empty_like(upper)


def lce_factors(
    dataset_counts: Tensor,
    dataset_size: int,
    batch_present: Tensor,
    upper: Tensor,
    phi: Tensor,
) -> tuple[Tensor, Tensor]:
    """LCE factors A (Eq. 3, normalised by its mean) and B (Eq. 8).

    ``A_m = (N / count_m) / mean_k(N / count_k)`` from the data set's presence counts;
    ``B_m = max(U_m - sum_n phi[n, m], 0) / (batch samples with m present)``, and 0 for a
    modality absent from the whole batch.

    Args:
        dataset_counts: Tensor[M] int64, samples of the data set with modality m present.
        dataset_size: N, samples in the data set.
        batch_present: Tensor[N_b] int64 presence bitmasks of the batch.
        upper: Tensor[M] float32, U_m: the batch sum of the frozen unimodal model's utility.
        phi: Tensor[N_b, M] float32 per-sample Shapley values of the batch.

    Returns:
        (A, B), each Tensor[M] float32.
    """
    _check_tensor("dataset_counts", dataset_counts, (torch.int64,), 1)
    _check_tensor("batch_present", batch_present, (torch.int64,), 1)
    _check_tensor("upper", upper, (torch.float32,), 1)
    _check_tensor("phi", phi, (torch.float32,), 2)
    num_modalities = dataset_counts.shape[0]
    _check_num_modalities(num_modalities)
    if upper.shape[0] != num_modalities:
        raise ValueError(
            f"upper must have {num_modalities} values (one per modality), got {upper.shape[0]}"
        )
    if tuple(phi.shape) != (batch_present.shape[0], num_modalities):
        raise ValueError(
            f"phi must have shape [N_b, M] = [{batch_present.shape[0]}, {num_modalities}], "
            f"got {list(phi.shape)}"
        )
    _check_same_device(
        "upper", upper, dataset_counts=dataset_counts, batch_present=batch_present, phi=phi
    )
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < 1:
        raise ValueError(f"dataset_size must be a positive int, got {dataset_size!r}")
    never = dataset_counts <= 0
    if bool(never.any()):
        first = _first(never)
        raise ValueError(
            f"modality {first} is never present in the data set "
            f"(count {int(dataset_counts[first])}); its factor A is undefined"
        )
    if bool((dataset_counts > dataset_size).any()):
        raise ValueError(f"dataset_counts exceed dataset_size={dataset_size}")
    if not (bool(torch.isfinite(upper).all()) and bool(torch.isfinite(phi).all())):
        raise ValueError("upper and phi must be finite (found NaN or inf)")
    _check_present_values(batch_present, num_modalities)
    return _lce_op(dataset_counts, dataset_size, batch_present, upper, phi)
