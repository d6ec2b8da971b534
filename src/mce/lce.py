"""Learning Capability Enhancement factors (Section 3.2 of the MCE paper).

A (Eq. 3) corrects the data set's unequal modality availability; B (Eq. 8) encourages the
modalities whose current batch contribution phi falls short of their unimodal upper bound U,
which :class:`BatchUpperBounds` measures on a batch's own inputs where they change every step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mce import ops
from mce.bits import presence_matrix, samples_with_modality
from mce.data.dataset import Batch
from mce.model import UnimodalModel, run_encoder
from mce.typing import Phi, PresentMask

__all__ = [
    "BatchUpperBounds",
    "LCEFactors",
    "presence_counts",
    "dataset_factor",
    "lce_factors",
    "batch_factor",
    "run_unimodal",
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


def run_unimodal(
    model: nn.Module,
    x: Tensor,
    lengths: Tensor | None = None,
    context: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """A unimodal model's outputs: :class:`~mce.model.UnimodalModel` takes the context mapping;
    any other module is called as an encoder would be (:func:`mce.model.run_encoder`)."""
    if isinstance(model, UnimodalModel):
        return model(x, lengths, context)
    return run_encoder(model, x, lengths, context)


class BatchUpperBounds:
    """U of a batch from the frozen unimodal models run on that batch's own inputs.

    For tasks whose training inputs change every step (random crops), a per-sample table
    measured on whole inputs would compare a different quantity with the Shapley values of the
    batch; this scores each sample where modality m is present with m's frozen model, in eval
    mode and without gradients (one forward pass per modality and step).

    Args:
        models: modality -> frozen unimodal model (input [B, ...] -> outputs).
        modalities: the task's modality order (column m of the result).
        utility: (outputs, target) -> per-sample utility in [0, 1].
    """

    def __init__(
        self,
        models: Mapping[str, nn.Module],
        modalities: Sequence[str],
        utility: Callable[[Tensor, Tensor], Tensor],
    ) -> None:
        self.models, self.modalities, self.utility = dict(models), tuple(modalities), utility
        for model in self.models.values():
            model.eval()
            model.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, batch: Batch) -> Tensor:
        """Tensor[N_b, M]: utility of m's model on each sample of ``batch`` (0 where absent)."""
        values = torch.zeros(
            batch.present.shape[0], len(self.modalities), device=batch.present.device
        )
        for m, name in enumerate(self.modalities):
            index = samples_with_modality(batch.present, m)
            if not index.numel():
                continue
            lengths = batch.lengths[name][index] if name in batch.lengths else None
            context = {key: value[index] for key, value in batch.context.items()}
            x = batch.inputs[name][index].float()
            outputs = run_unimodal(self.models[name], x, lengths, context)
            values[index, m] = self.utility(outputs, batch.target[index]).float()
        return values
