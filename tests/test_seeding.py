"""Independent random streams: the masks' draw and each epoch's data order."""

from __future__ import annotations

import pytest
import torch

from mce.data.masks import draw_presence
from mce.support.bits import presence_matrix
from mce.support.seeding import stream, stream_seed
from mce.training.trainer import epoch_order


def test_streams_are_reproducible_and_distinct() -> None:
    assert stream_seed(3, "order", 0) == stream_seed(3, "order", 0)
    seeds = {
        stream_seed(seed, purpose, *keys)
        for seed in (0, 1)
        for purpose, keys in (("masks", ()), ("order", (0,)), ("order", (1,)), ("pretrain", (0,)))
    }
    assert len(seeds) == 8
    first = torch.randperm(50, generator=stream(0, "masks"))
    assert torch.equal(first, torch.randperm(50, generator=stream(0, "masks")))
    assert not torch.equal(first, torch.randperm(50, generator=stream(0, "order", 0)))


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_negative_or_non_integer_seeds_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="non-negative ints"):
        stream_seed(bad, "masks")


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_epoch_0_order_is_independent_of_the_mask_draw(seed: int) -> None:
    """A 20% modality spread evenly over the batches of epoch 0: with the masks and the order
    drawn from one generator seeded alike, epoch 0 put the kept samples together (images per
    batch of 128: 10-18 for eight batches, then 75 and 66)."""
    num_samples, batch = 1257, 128
    present = draw_presence(num_samples, (0.8, 0.2), seed)
    images = presence_matrix(present, 2)[:, 0]
    order = epoch_order(seed, 0, num_samples)
    per_batch = [int(images[order[i : i + batch]].sum()) for i in range(0, num_samples, batch)]
    full = per_batch[:-1]  # the last batch holds 105 samples
    expected = batch * float(images.float().mean())  # 25.6
    # binomial sd ~4.5 a batch: every full batch within 4 sd, and their spread that of chance
    assert all(abs(count - expected) < 18 for count in full), per_batch
    assert float(torch.tensor(full, dtype=torch.float).std()) < 9.0, per_batch
    # and positions in the order carry no information about presence
    rank = torch.empty(num_samples)
    rank[order] = torch.arange(num_samples, dtype=torch.float)
    correlation = torch.corrcoef(torch.stack([rank, images.float()]))[0, 1]
    assert abs(float(correlation)) < 0.1


def test_each_epoch_has_its_own_order() -> None:
    orders = [epoch_order(0, epoch, 100) for epoch in range(3)]
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    assert torch.equal(orders[0], epoch_order(0, 0, 100))
    assert torch.equal(orders[0].sort().values, torch.arange(100))
