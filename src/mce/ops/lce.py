"""LCE factors A (Eq. 3) and B (Eq. 8). Kernels: ``csrc/cpu/lce.cpp``, ``csrc/cuda/lce.cu``."""

from __future__ import annotations

import torch
from torch import Tensor

from mce.ops import _checks
from mce.ops._checks import (
    check_num_modalities,
    check_present_values,
    check_same_device,
    check_tensor,
    first,
    launch,
)

__all__ = ["lce_factors"]


@torch.library.custom_op("mce::lce_factors", mutates_args=(), device_types=("cpu", "cuda"))
def _lce_op(
    dataset_counts: Tensor, dataset_size: int, batch_present: Tensor, upper: Tensor, phi: Tensor
) -> tuple[Tensor, Tensor]:
    factor_a = _checks.allocate("factor A", tuple(upper.shape), upper.dtype, upper.device)
    factor_b = _checks.allocate("factor B", tuple(upper.shape), upper.dtype, upper.device)
    launch(
        "lce_factors",
        upper.device,
        dataset_counts=dataset_counts.data_ptr(),
        dataset_size=dataset_size,
        batch_present=batch_present.data_ptr(),
        num_samples=batch_present.shape[0],
        upper=upper.data_ptr(),
        phi=phi.data_ptr(),
        num_modalities=upper.shape[0],
        factor_a=factor_a.data_ptr(),
        factor_b=factor_b.data_ptr(),
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
    check_tensor("dataset_counts", dataset_counts, (torch.int64,), 1)
    check_tensor("batch_present", batch_present, (torch.int64,), 1)
    check_tensor("upper", upper, (torch.float32,), 1)
    check_tensor("phi", phi, (torch.float32,), 2)
    num_modalities = dataset_counts.shape[0]
    check_num_modalities(num_modalities)
    if upper.shape[0] != num_modalities:
        raise ValueError(
            f"upper must have {num_modalities} values (one per modality), got {upper.shape[0]}"
        )
    if tuple(phi.shape) != (batch_present.shape[0], num_modalities):
        raise ValueError(
            f"phi must have shape [N_b, M] = [{batch_present.shape[0]}, {num_modalities}], "
            f"got {list(phi.shape)}"
        )
    check_same_device(
        "upper", upper, dataset_counts=dataset_counts, batch_present=batch_present, phi=phi
    )
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < 1:
        raise ValueError(f"dataset_size must be a positive int, got {dataset_size!r}")
    never = dataset_counts <= 0
    if bool(never.any()):
        m = first(never)
        raise ValueError(
            f"modality {m} is never present in the data set "
            f"(count {int(dataset_counts[m])}); its factor A is undefined"
        )
    if bool((dataset_counts > dataset_size).any()):
        raise ValueError(f"dataset_counts exceed dataset_size={dataset_size}")
    if not (bool(torch.isfinite(upper).all()) and bool(torch.isfinite(phi).all())):
        raise ValueError("upper and phi must be finite (found NaN or inf)")
    check_present_values(batch_present, num_modalities)
    return _lce_op(dataset_counts, dataset_size, batch_present, upper, phi)
