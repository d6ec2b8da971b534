"""Lazily read modalities: views, masks, ragged padding, prefetching batches, and the same
batches as the split held in memory."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from mce.data.dataset import MultimodalData
from mce.data.lazy import LazyRows
from mce.training.pretrain import data_fingerprint


class Store:
    """Random fixed-size images and ragged point clouds, counting what is read."""

    def __init__(self, count: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.images = rng.normal(size=(count, 3, 5)).astype(np.float32)
        self.clouds = [rng.normal(size=(int(rng.integers(1, 9)), 4)).astype(np.float32)
                       for _ in range(count)]  # fmt: skip
        self.read: list[int] = []
        self.lock = threading.Lock()

    def image(self, position: int) -> np.ndarray:
        with self.lock:
            self.read.append(position)
        return self.images[position]

    def cloud(self, position: int) -> np.ndarray:
        return self.clouds[position]

    def lazy(self, workers: int = 3) -> MultimodalData:
        count = len(self.images)
        return MultimodalData(
            ("image", "points"),
            {
                "image": LazyRows(self.image, count, (3, 5), torch.float32, "img", workers=workers),
                "points": LazyRows(
                    self.cloud, count, (4,), torch.float32, "pts", ragged=True, workers=workers
                ),
            },
            torch.arange(count) % 3,
            torch.full((count,), 3, dtype=torch.int64),
        )

    def memory(self) -> MultimodalData:
        count = len(self.images)
        longest = max(len(cloud) for cloud in self.clouds)
        points = np.zeros((count, longest, 4), dtype=np.float32)
        for n, cloud in enumerate(self.clouds):
            points[n, : len(cloud)] = cloud
        return MultimodalData.from_arrays(
            {"image": self.images, "points": points},
            np.arange(count) % 3,
            lengths={"points": [len(cloud) for cloud in self.clouds]},
        )


def _assert_same(a, b) -> None:
    assert a.inputs.keys() == b.inputs.keys()
    for name in a.inputs:
        assert torch.equal(a.inputs[name], b.inputs[name]), name
    assert a.lengths.keys() == b.lengths.keys()
    for name in a.lengths:
        assert torch.equal(a.lengths[name], b.lengths[name]), name
    assert torch.equal(a.target, b.target) and torch.equal(a.present, b.present)
    assert torch.equal(a.index, b.index)


def test_lazy_batches_equal_the_split_in_memory() -> None:
    seed = int(torch.randint(0, 2**31 - 1, ()))
    store = Store(23, seed)
    generator = torch.Generator().manual_seed(seed)
    present = torch.randint(1, 4, (23,), generator=generator)
    lazy, memory = store.lazy().with_presence(present), store.memory().with_presence(present)
    order = torch.randperm(23, generator=generator)
    pairs = list(zip(lazy.batches(4, order, start=1), memory.batches(4, order, start=1)))
    assert len(pairs) == 5
    for a, b in pairs:
        _assert_same(a, b)
    # a subset of a masked split, then split again: still views, still equal
    chosen = torch.tensor([20, 3, 7, 11, 0])
    _assert_same(lazy.subset(chosen).batch(torch.arange(5)), memory.subset(chosen).batch(
        torch.arange(5)))  # fmt: skip
    first, _ = lazy.random_split(0.5, seed)
    second, _ = memory.random_split(0.5, seed)
    _assert_same(first.batch(torch.arange(3)), second.batch(torch.arange(3)))


def test_absent_rows_are_not_read_and_come_back_zero() -> None:
    store = Store(6, 0)
    data = store.lazy(workers=1).with_presence(torch.tensor([1, 2, 3, 2, 1, 2]))
    batch = data.batch(torch.arange(6))
    assert sorted(store.read) == [0, 2, 4]  # the image is present in samples 0, 2, 4 only
    assert not batch.inputs["image"][[1, 3, 5]].any()
    sizes = [len(cloud) for cloud in store.clouds]
    assert batch.lengths["points"].tolist() == [0, sizes[1], sizes[2], sizes[3], 0, sizes[5]]
    assert not batch.inputs["points"][[0, 4]].any()


def test_every_sample_absent_gives_one_zero_frame() -> None:
    store = Store(3, 1)
    data = store.lazy().with_presence(torch.tensor([1, 1, 1]))
    batch = data.batch(torch.arange(3))
    assert batch.inputs["points"].shape == (3, 1, 4) and not batch.inputs["points"].any()
    assert batch.lengths["points"].tolist() == [0, 0, 0]


def test_a_read_error_reaches_the_consumer() -> None:
    def broken(position: int) -> np.ndarray:
        raise ValueError(f"sample file {position}.bin is corrupt")

    data = MultimodalData(
        ("image",),
        {"image": LazyRows(broken, 4, (2,), torch.float32, "broken")},
        torch.zeros(4, dtype=torch.int64),
        torch.ones(4, dtype=torch.int64),
    )
    with pytest.raises(ValueError, match=r"sample file \d\.bin is corrupt"):
        list(data.batches(2))


def test_fingerprint_follows_source_selection_and_mask() -> None:
    store = Store(8, 2)
    data = store.lazy()
    base = data_fingerprint(data)
    assert data_fingerprint(store.lazy()) == base
    assert data_fingerprint(data.with_presence(torch.tensor([3, 3, 3, 1, 3, 3, 3, 3]))) != base
    assert data_fingerprint(data.subset(torch.arange(7))) != base
    other = store.lazy()
    other.inputs["image"].identity = "img-other-resolution"
    assert data_fingerprint(other) != base


def test_lazy_inputs_refuse_separate_lengths() -> None:
    store = Store(4, 3)
    with pytest.raises(ValueError, match="read lazily: its lengths come with it"):
        MultimodalData(
            ("points",),
            {"points": LazyRows(store.cloud, 4, (4,), torch.float32, "p", ragged=True)},
            torch.zeros(4, dtype=torch.int64),
            torch.ones(4, dtype=torch.int64),
            {"points": torch.ones(4, dtype=torch.int64)},
        )


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (np.zeros((3, 4), dtype=np.float32), r"was read with shape \[3, 4\], expected \[3, 5\]"),
        (np.full((3, 5), np.nan, dtype=np.float32), "holds NaN or infinite values"),
    ],
)
def test_what_a_reader_returns_is_checked(returned, message) -> None:
    rows = LazyRows(lambda position: returned, 4, (3, 5), torch.float32, "images of store x")
    with pytest.raises(ValueError, match=f"images of store x: sample 2 {message}"):
        rows.load(torch.tensor([2]))


def test_ragged_reads_are_checked() -> None:
    def cloud(position: int) -> np.ndarray:
        return np.zeros((0, 4) if position else (2, 3), dtype=np.float32)

    rows = LazyRows(cloud, 2, (4,), torch.float32, "clouds", ragged=True, workers=1)
    with pytest.raises(ValueError, match=r"sample 0 was read with shape \[2, 3\], expected"):
        rows.load(torch.tensor([0]))
    with pytest.raises(ValueError, match="sample 1 was read with no element"):
        rows.load(torch.tensor([1]))


def test_read_ahead_keeps_order_and_cancels_when_the_consumer_stops() -> None:
    from mce.data.lazy import read_ahead

    started: list[int] = []
    release = threading.Event()

    def slow(item: int) -> int:
        started.append(item)
        if item >= 2:
            release.wait(5)
        return item * item

    reads = read_ahead(slow, list(range(50)), depth=3)
    assert [next(reads), next(reads)] == [0, 1]
    reads.close()  # returns at once; the reads not started are cancelled
    release.set()
    assert max(started) < 10
    assert list(read_ahead(lambda item: -item, [3, 1, 2], depth=2)) == [-3, -1, -2]
    assert list(read_ahead(lambda item: -item, [3, 1, 2], depth=0)) == [-3, -1, -2]
