"""RCE losses against hand-computed values on tiny inputs."""

from __future__ import annotations

import pytest
import torch

from mce.science.rce import aux_loss, average_rows, per_subset_mean, single_loss, subset_loss


def test_subset_loss_averages_per_subset_then_over_subsets():
    # Subset 1 on rows 0, 2 (losses 1, 3: mean 2); subset 3 on row 1 (loss 10).
    losses = torch.tensor([1.0, 10.0, 3.0])
    rows = torch.tensor([[0, 1], [0, 3], [1, 1]])
    present = torch.tensor([3, 1])
    assert subset_loss(losses, rows, present).item() == (2.0 + 10.0) / 2


def test_subset_loss_takes_any_row_averaging():
    # The averaging is a callable (values, rows, present) -> scalar; the default is Eq. 11's.
    losses = torch.tensor([1.0, 10.0, 3.0])
    rows = torch.tensor([[0, 1], [0, 3], [1, 1]])
    present = torch.tensor([3, 1])
    assert subset_loss(losses, rows, present, average_rows) == subset_loss(losses, rows, present)
    plain_mean = subset_loss(losses, rows, present, lambda values, rows, present: values.mean())
    assert plain_mean.item() == pytest.approx(14.0 / 3)


def test_aux_loss_hand_computed():
    # Two samples, M = 2, F = 2. Sample 0 has both modalities, sample 1 only modality 0.
    h = torch.tensor([[[1.0, 1.0], [2.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    present = torch.tensor([0b11, 0b01])
    rows = torch.tensor([[0, 0b01], [0, 0b10], [0, 0b11], [1, 0b01]])
    tokens = torch.zeros(4, 2, 2)
    weights = torch.tensor([0.5, 2.0])
    # row 0 drops modality 1: |0 - [2, 4]| mean = 3, weight 2 -> 6
    # row 1 drops modality 0: |0 - [1, 1]| mean = 1, weight 0.5 -> 0.5
    # row 2 and row 3 drop nothing -> 0
    # per subset: S=1 rows {0, 3}: (6 + 0) / 2 = 3; S=2: 0.5; S=3: 0 -> mean 3.5 / 3
    expected = (3.0 + 0.5 + 0.0) / 3
    assert abs(aux_loss(tokens, h, rows, present, weights).item() - expected) < 1e-6


def test_aux_loss_does_not_push_features_towards_reconstructions():
    h = torch.randn(1, 2, 3, requires_grad=True)
    tokens = torch.randn(1, 2, 3, requires_grad=True)
    loss = aux_loss(tokens, h, torch.tensor([[0, 1]]), torch.tensor([3]), torch.ones(2))
    loss.backward()
    assert h.grad is None and tokens.grad is not None


def test_single_loss_weights_each_modality():
    target = torch.tensor([0, 1, 1])
    unimodal = {
        0: (torch.tensor([0, 1]), torch.tensor([[2.0, 0.0], [0.0, 2.0]])),
        1: (torch.tensor([2]), torch.tensor([[0.0, 0.0]])),
    }
    weights = torch.tensor([1.0, 3.0])
    loss = single_loss(
        unimodal,
        target,
        lambda o, t: torch.nn.functional.cross_entropy(o, t, reduction="none"),
        weights,
    )
    expected = torch.log1p(torch.exp(torch.tensor(-2.0))) + 3.0 * torch.log(torch.tensor(2.0))
    torch.testing.assert_close(loss, expected)


def test_per_subset_mean_matches_loop():
    values = torch.rand(20)
    subsets = torch.randint(1, 5, (20,))
    loop = [values[subsets == s].mean() for s in subsets.unique()]
    torch.testing.assert_close(per_subset_mean(values, subsets), torch.stack(loop).mean())
