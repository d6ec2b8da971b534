"""Modality inputs read from storage when a batch needs them, for splits too large for memory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = ["LazyRows", "take_rows", "read_ahead"]

T = TypeVar("T")
R = TypeVar("R")


class LazyRows:
    """The inputs [N, ...] of one modality, read sample by sample when a batch needs them.

    Stands in for a tensor in :attr:`MultimodalData.inputs`: splitting, subsetting and masking
    make views (no reading); :meth:`load` reads the rows of a batch (on ``workers`` threads) and
    stacks them. Rows of samples where the modality is masked out come back as zeros, unread.

    A ragged modality (e.g. point clouds, ``ragged=True``) reads [P_n, ...] arrays of varying
    P_n: a batch is zero-padded to its longest (at least 1) and comes with the valid lengths,
    as a padded sequence modality of an in-memory split.

    Args:
        read: position in the store -> that sample's array (``sample_shape``, or
            [P, *sample_shape] with P >= 1 when ragged); it raises ``ValueError`` naming a bad
            file. What it returns is checked (shape, finite values): a ``ValueError`` names
            the sample otherwise.
        count: samples in the store.
        sample_shape: shape of one sample (ragged: of one of its elements).
        dtype: dtype of the loaded tensor.
        identity: what distinguishes this store's contents (source, resolution, ...): with the
            selected positions and mask, it fingerprints the data (cached upper bounds).
        ragged: samples have a varying first dimension.
        workers: threads reading the samples of a batch.
    """

    def __init__(
        self,
        read: Callable[[int], np.ndarray],
        count: int,
        sample_shape: tuple[int, ...],
        dtype: torch.dtype,
        identity: str,
        *,
        ragged: bool = False,
        workers: int = 4,
        positions: Tensor | None = None,
        keep: Tensor | None = None,
    ) -> None:
        self.read, self.count, self.identity = read, count, identity
        self.sample_shape, self.dtype, self.ragged = tuple(sample_shape), dtype, ragged
        self.workers = max(1, workers)
        self.positions = torch.arange(count) if positions is None else positions
        self.keep = torch.ones(len(self.positions), dtype=torch.bool) if keep is None else keep

    def _view(self, positions: Tensor, keep: Tensor) -> LazyRows:
        return LazyRows(
            self.read,
            self.count,
            self.sample_shape,
            self.dtype,
            self.identity,
            ragged=self.ragged,
            workers=self.workers,
            positions=positions,
            keep=keep,
        )

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, *sample_shape); ragged: (N, -1, *sample_shape)."""
        return (len(self), *((-1,) if self.ragged else ()), *self.sample_shape)

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def take(self, index: Tensor | slice) -> LazyRows:
        """A view of the rows at ``index`` (positions, a boolean mask or a slice)."""
        return self._view(self.positions[index], self.keep[index])

    def masked(self, keep: Tensor) -> LazyRows:
        """The same rows, those where ``keep`` [N] bool is False read as zeros."""
        if tuple(keep.shape) != (len(self),):
            raise ValueError(f"keep must have shape [{len(self)}], got {list(keep.shape)}")
        return self._view(self.positions, self.keep & keep.bool().cpu())

    def _check(self, position: int, array: np.ndarray) -> None:
        """Raise a ValueError naming the sample unless ``array`` has the store's shape and, for
        floating data, finite values."""
        shape = array.shape[1:] if self.ragged else array.shape
        if tuple(shape) != self.sample_shape or (self.ragged and array.ndim < 1):
            expected = ("P", *self.sample_shape) if self.ragged else self.sample_shape
            raise ValueError(
                f"{self.identity}: sample {position} was read with shape {list(array.shape)}, "
                f"expected {list(expected)}"
            )
        if self.ragged and len(array) == 0:
            raise ValueError(f"{self.identity}: sample {position} was read with no element")
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ValueError(f"{self.identity}: sample {position} holds NaN or infinite values")

    def fingerprint(self) -> bytes:
        """Bytes identifying the contents: the identity, the positions and the mask."""
        digest = hashlib.sha256(self.identity.encode())
        digest.update(self.positions.numpy().tobytes())
        digest.update(self.keep.numpy().tobytes())
        return digest.digest()

    def load(self, index: Tensor | slice | None = None) -> tuple[Tensor, Tensor | None]:
        """(the rows at ``index`` read and stacked, their lengths when ragged, else None);
        None: every row."""
        view = self if index is None else self.take(index)
        chosen = [int(p) for p, k in zip(view.positions, view.keep) if k]
        if len(chosen) > 1 and self.workers > 1:
            with ThreadPoolExecutor(min(self.workers, len(chosen))) as pool:
                arrays = list(pool.map(self.read, chosen))
        else:
            arrays = [self.read(p) for p in chosen]
        for position, array in zip(chosen, arrays):
            self._check(position, np.asarray(array))
        values = iter(torch.as_tensor(np.asarray(a)).to(self.dtype) for a in arrays)
        kept = view.keep.tolist()
        if not self.ragged:
            out = torch.zeros(len(view), *self.sample_shape, dtype=self.dtype)
            for n, has in enumerate(kept):
                if has:
                    out[n] = next(values)
            return out, None
        rows = [next(values) if has else None for has in kept]
        longest = max([1, *(len(row) for row in rows if row is not None)])
        out = torch.zeros(len(view), longest, *self.sample_shape, dtype=self.dtype)
        lengths = torch.zeros(len(view), dtype=torch.int64)
        for n, row in enumerate(rows):
            if row is not None:
                out[n, : len(row)] = row
                lengths[n] = len(row)
        return out, lengths


def read_ahead(read: Callable[[T], R], items: Sequence[T], depth: int) -> Iterator[R]:
    """``read(item)`` of every item, in order, with up to ``depth`` reads running ahead on
    background threads; reads still pending when the consumer stops are cancelled."""
    if depth < 1:
        yield from (read(item) for item in items)
        return
    pool = ThreadPoolExecutor(depth)
    try:
        pending = [pool.submit(read, item) for item in items[:depth]]
        for k in range(len(items)):
            result = pending.pop(0).result()
            if k + depth < len(items):
                pending.append(pool.submit(read, items[k + depth]))
            yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def take_rows(value: Tensor | LazyRows, index: Tensor | slice) -> Tensor | LazyRows:
    """``value[index]`` of a tensor, a view of the rows of :class:`LazyRows`."""
    return value.take(index) if isinstance(value, LazyRows) else value[index]
