"""Learning Capability Enhancement factors (Section 3.2 of the MCE paper).

A (Eq. 3) corrects the data set's unequal modality availability; B (Eq. 8) encourages the
modalities whose current batch contribution phi falls short of their unimodal upper bound U,
which :class:`BatchUpperBounds` measures on a batch's own inputs where they change every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mce import ops
from mce.support.bits import presence_matrix
from mce.support.typing import Phi, PresentMask

__all__ = [
    "LCEFactors",
    "presence_counts",
    "dataset_factor",
    "lce_factors",
    "batch_factor",
]


@dataclass(frozen=True)
class LCEFactors:
    """Per-modality factors: ``a`` (dataset, mean-normalised) and ``b`` (batch), Tensor[M]."""

    a: Tensor
    b: Tensor

    @property
    def weight(self) -> Tensor:
        """A_m B_m, the weight of modality m in L_single (Eq. 9) and L_aux (Eq. 13)."""
        return self.a * self.b


def presence_counts(present: PresentMask, num_modalities: int) -> Tensor:
    """Tensor[M] int64: samples with modality m present."""
    return presence_matrix(present, num_modalities).sum(dim=0)


def dataset_factor(counts: Tensor, dataset_size: int) -> Tensor:
    """Eq. 3 normalised by its mean: ``A_m = (N / counts_m) / mean_k(N / counts_k)``.

    Args:
        counts: Tensor[M] int64, samples of the data set with modality m present.
        dataset_size: N.
    """
    empty_batch = torch.empty(0, dtype=torch.int64, device=counts.device)
    upper = torch.zeros(counts.shape[0], dtype=torch.float32, device=counts.device)
    phi = torch.empty((0, counts.shape[0]), dtype=torch.float32, device=counts.device)
    return ops.lce_factors(counts, dataset_size, empty_batch, upper, phi)[0]


def lce_factors(
    counts: Tensor, dataset_size: int, batch_present: PresentMask, upper: Tensor, phi: Phi
) -> LCEFactors:
    """Factors A (Eq. 3, mean-normalised) and B (Eq. 8) for one batch.

    ``B_m = max(U_m - phi_m, 0) / (batch samples with m present)``, with
    ``phi_m = sum_n phi[n, m]`` (Eq. 5) and ``U_m`` the batch sum of the frozen unimodal model's
    utility; 0 for a modality absent from the batch.

    Args:
        counts: Tensor[M] int64 presence counts of the training split.
        dataset_size: N, samples in the training split.
        batch_present: Tensor[N_b] int64 presence bitmasks of the batch.
        upper: Tensor[M] float32, U_m.
        phi: Tensor[N_b, M] float32 per-sample Shapley values.
    """
    factor_a, factor_b = ops.lce_factors(counts, dataset_size, batch_present, upper, phi)
    return LCEFactors(factor_a, factor_b)


def batch_factor(upper: Tensor, phi: Tensor, batch_counts: Tensor) -> Tensor:
    """Eq. 8 from the batch totals: ``B_m = max(U_m - phi_m, 0) / count_m``, 0 where
    ``count_m`` is 0.

    For a data-parallel step, whose totals are sums over the ranks' slices of the global
    batch. The arithmetic is that of :func:`lce_factors` (U rounded to float32, phi and the
    division in float64, the result rounded to float32), so the totals of the global batch
    give the B that one process computes on it.

    Args:
        upper: Tensor[M], U_m: the batch sum of the frozen unimodal models' utilities.
        phi: Tensor[M], phi_m: the batch sum of the Shapley values (float64 for an exact sum).
        batch_counts: Tensor[M], batch samples with modality m present.

    Returns:
        Tensor[M] float32.

    Raises:
        ValueError: U or phi holds NaN or infinite values.
    """
    if not (bool(torch.isfinite(upper).all()) and bool(torch.isfinite(phi).all())):
        raise ValueError("upper and phi must be finite (found NaN or inf)")
    gap = (upper.float().double() - phi.double()).clamp(min=0)
    counts = batch_counts.double()
    return torch.where(counts > 0, gap / counts.clamp(min=1), 0.0).float()
