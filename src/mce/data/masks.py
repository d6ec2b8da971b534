"""Seeded per-modality missing masks at exact, stated missing rates.

For a split of N samples and missing rates ``r_m`` (one per modality), modality m is missing from
exactly :func:`missing_counts` ``(N, r)[m]`` samples: N r_m rounded half up
(:func:`missing_count`), or rounded down where only that leaves every sample a modality, so always
within one sample of N r_m; and no sample misses every modality. That is possible exactly when
``sum_m (1 - r_m) >= 1`` (and the data's own missing modalities allow it); otherwise the draw
raises a ``ValueError`` that says why and which rates would work. Only when asked
(``drop_all_missing=True``) do the draws stay independent and the samples left with nothing get
dropped, with the actual rates reported instead.

The masks are seeded (one ``torch.Generator`` per call, the stream ``(seed, "masks")`` of
:mod:`mce.support.seeding`) and the same for the same arguments.

Two schemes draw masks, and files can give them instead. ``exact`` (:func:`apply_missing_rates`)
fixes each modality's missing count, as above. ``quota`` (:func:`apply_quota_masks`, the
scheme of PASSION's BraTS splits) fixes instead how many samples get each combination of
modalities, ``floor(N P(S))`` with P(S) the probability of that combination under independent
draws at the rates; the samples left over draw a non-empty combination, so rates come out near,
not at, the stated ones. :func:`presence_from_csv` reads the masks of a published split: our
``sample_token``/``id`` + 0/1 columns, PASSION's BraTS2020 ``Brats2020_imb_split_mr*.csv`` and
MCE's nuScenes ``nuScenes_imb_*.csv`` (layouts in :mod:`mce.data.presence`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations

import numpy as np
import torch
from torch import Tensor

from mce.data.dataset import MultimodalData
from mce.data.presence import read_presence
from mce.support.bits import presence_matrix, present_masks
from mce.support.seeding import stream

# The paper's six settings a-f: the permutations of (0.2, 0.5, 0.8) over three modalities.
PRESETS: dict[str, tuple[float, ...]] = {
    name: rates for name, rates in zip("abcdef", permutations((0.2, 0.5, 0.8)))
}

# N r is rounded half up; the tolerance makes a rate that is a half in decimal (N=10, r=0.35)
# round up although its binary N * r may fall a hair below the half.
_HALF_TOLERANCE = 1e-9

# Random (sample, modality) pairs tried per repair before scanning for the valid ones.
_TRIES = 32


@dataclass(frozen=True)
class MaskedSplit:
    """A split after masking.

    Attributes:
        data: the kept samples with their new presence masks (absent inputs zeroed).
        kept: Tensor[K] int64, the kept samples' positions in the original split (all of them
            unless ``drop_all_missing=True`` dropped some).
        dropped: how many samples were dropped because every modality was missing (0 unless
            ``drop_all_missing=True``).
        stated_rates: modality name -> the missing rate asked for.
        actual_rates: modality name -> the fraction of the kept samples that miss it; within
            one sample of the stated rate unless ``drop_all_missing=True``.
    """

    data: MultimodalData
    kept: Tensor
    dropped: int
    stated_rates: dict[str, float]
    actual_rates: dict[str, float]


def missing_count(num_samples: int, rate: float) -> int:
    """How many of ``num_samples`` samples miss a modality at missing rate ``rate``.

    ``floor(N rate + 1/2)``: N rate rounded half up (not Python's half-to-even ``round``), so
    always within half a sample of N rate; e.g. 4 of 7 at rate 0.5 and 3 of 10 at rate 0.25.
    """
    return math.floor(num_samples * rate + 0.5 + _HALF_TOLERANCE)


def missing_counts(
    num_samples: int, rates: Sequence[float], at_least: Sequence[int] | None = None
) -> list[int]:
    """Missing samples per modality: :func:`missing_count` of each rate, except where those
    rounded counts would leave fewer present entries than samples although the rates allow one
    modality per sample (sum of 1 - rate >= 1): then the counts rounded up the most are rounded
    down instead, one by one, until they fit, never below ``at_least[m]`` (the samples the data
    itself already misses). Every count stays within one sample of N rate.
    """
    counts = [missing_count(num_samples, rate) for rate in rates]
    floor = list(at_least) if at_least is not None else [0] * len(rates)
    if sum(1.0 - rate for rate in rates) < 1.0 - _HALF_TOLERANCE:
        return counts  # infeasible whatever the rounding; _check_feasible explains
    rounded_up = sorted(
        (
            m
            for m, count in enumerate(counts)
            if count > num_samples * rates[m] and count > floor[m]
        ),
        key=lambda m: counts[m] - num_samples * rates[m],
        reverse=True,
    )
    for m in rounded_up:
        if sum(num_samples - count for count in counts) >= num_samples:
            break
        counts[m] -= 1
    return counts


def draw_presence(
    num_samples: int,
    rates: Sequence[float],
    seed: int,
    *,
    available: Tensor | None = None,
    allow_all_missing: bool = False,
    modalities: Sequence[str] | None = None,
) -> Tensor:
    """Presence bitmasks Tensor[N] int64 with exactly ``missing_counts(N, rates)[m]`` samples
    missing modality m (N rate_m rounded half up, or down where only that leaves every sample a
    modality), chosen at random (seeded), and no sample missing every modality.

    Each modality's missing samples are drawn independently, then every sample left with
    nothing is repaired by moving one present entry to it from a sample that has two or more,
    which keeps every count (see :func:`_repair`). The result is the same for the same arguments.

    Args:
        num_samples: N.
        rates: missing rate per modality, each in [0, 1].
        seed: seed of the draw.
        available: presence bitmasks Tensor[N] of the data itself (default: every modality
            present). The result only has a modality where the data has it, and the data's
            own missing entries count towards the stated rates: modality m misses exactly
            ``missing_counts(N, rates, own)[m]`` samples in all.
        allow_all_missing: draw the modalities independently and skip the repair, so samples
            may miss every modality (the old behaviour; no feasibility check). Where the data
            already misses more samples than a rate asks for, it keeps them all.
        modalities: modality names for the error messages (default: "modality 0", ...).

    Raises:
        ValueError: a rate outside [0, 1]; a modality the data already misses more often than
            its rate allows (naming the stated and the achievable rate); rates that cannot leave
            every sample a modality (saying why and which rates would); a sample of ``available``
            with no modality.
    """
    num_modalities = len(rates)
    names = [f"modality {m}" for m in range(num_modalities)] if modalities is None else modalities
    if num_modalities == 0:
        raise ValueError("no missing rates given (one per modality is needed)")
    for name, rate in zip(names, rates):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"missing rate {rate} of {name!r} is outside [0, 1]")
    if available is None:
        has = np.ones((num_samples, num_modalities), dtype=bool)
    else:
        if tuple(available.shape) != (num_samples,):
            raise ValueError(
                f"available must have shape [{num_samples}], got {list(available.shape)}"
            )
        has = presence_matrix(available.cpu(), num_modalities).numpy()
    own_missing = [num_samples - int(has[:, m].sum()) for m in range(num_modalities)]
    counts = (
        [missing_count(num_samples, rate) for rate in rates]
        if allow_all_missing
        else missing_counts(num_samples, rates, own_missing)
    )
    if not allow_all_missing:
        _check_feasible(num_samples, rates, counts, has, names)

    generator = stream(seed, "masks")
    present = has.copy()
    for m, count in enumerate(counts):
        # Drop modality m from just enough of the samples that have it to miss it `count` times.
        # With full data this is randperm(N)[:count], the draw of earlier versions.
        holders = np.flatnonzero(has[:, m])
        extra = max(0, count - (num_samples - holders.size))
        order = torch.randperm(holders.size, generator=generator).numpy()
        present[holders[order[:extra]], m] = False
    if not allow_all_missing:
        _repair(present, has, counts, generator, names)
    return present_masks(torch.from_numpy(present))


def _check_feasible(
    num_samples: int,
    rates: Sequence[float],
    counts: Sequence[int],
    has: np.ndarray,
    names: Sequence[str],
) -> None:
    """Raise the ValueError that explains why exact rates with no empty sample are impossible."""
    for m, (name, rate, count) in enumerate(zip(names, rates, counts)):
        own = num_samples - int(has[:, m].sum())
        if own > count:
            raise ValueError(
                f"{name!r}: the data itself already misses it in {own} of {num_samples} samples "
                f"(missing rate {own / num_samples:.4g}), more than the stated missing rate "
                f"{rate} allows ({count} samples); achievable missing rates for {name!r} are "
                f"{own / num_samples:.4g} and above"
            )
    spare = sum(num_samples - count for count in counts)
    if spare < num_samples:
        fractions = sum(1.0 - rate for rate in rates)
        why = (
            f"the present fractions sum to {fractions:.4g} < 1"
            if fractions < 1.0
            else f"at {num_samples} samples the rounded missing counts {list(counts)} leave "
            f"only {spare} present entries for {num_samples} samples"
        )
        raise ValueError(
            f"missing rates {dict(zip(names, rates))} cannot leave every sample a modality: {why}. "
            "Every sample needs at least one modality, so lower some rate so that "
            "sum(1 - rate) >= 1 (with the counts rounded: sum(N - round(N rate)) >= N), or pass "
            "drop_all_missing=True to drop the samples left with nothing"
        )
    empty = np.flatnonzero(~has.any(axis=1))
    if empty.size:
        raise ValueError(
            f"sample {int(empty[0])} has no modality in the data ({empty.size} such samples); "
            "drop them first"
        )


def _repair(
    present: np.ndarray,
    has: np.ndarray,
    counts: Sequence[int],
    generator: torch.Generator,
    names: Sequence[str],
) -> None:
    """Give every sample with no modality one, in place, keeping every modality's count.

    For an empty sample i, pick uniformly (seeded, :func:`_pick_pair`) a pair (m, j) with m in the data of i and j a
    sample that has m present and at least two present modalities; make m present in i and
    absent in j. j keeps a modality and i gains one, so the empty samples shrink by one and the
    counts stay. Such a pair always exists with full data while ``sum_m (N - k_m) >= N``: the
    present entries number at least N, i holds none of them, so the other N - 1 samples hold at
    least N and one of them, j, holds two; i can take any modality, including one of j's.

    Where the data misses modalities of its own, no such pair may exist although a repair does:
    then the swap becomes a chain found by breadth-first search over modalities, i takes m1 from
    j1, whose only modality it was; j1 takes m2 (which its data has) from j2; ...; j_k gives
    m_k and keeps another. If the search finds no chain, let R be the modalities it reached: all
    samples holding a modality in R hold just that one, and they and i have data only in R, so
    more samples than ``sum_{m in R} (N - k_m)`` need a modality from R (Hall's condition fails)
    and no repair exists; the error says so.
    """
    num_samples, num_modalities = present.shape
    held = present.sum(axis=1)
    for i in np.flatnonzero(held == 0):
        pair = _pick_pair(int(i), present, has, held, generator)
        if pair is not None:
            moves = [pair]
        else:
            moves, reached = _find_chain(int(i), present, has, held, generator)
            if not moves:
                group = [names[m] for m in reached]
                outside = np.ones(num_modalities, dtype=bool)
                outside[reached] = False
                needy = int((~has[:, outside]).all(axis=1).sum())
                room = sum(num_samples - counts[m] for m in reached)
                raise ValueError(
                    f"cannot give every sample a modality at these missing rates: {needy} "
                    f"samples have in the data only modalities among {group}, which the rates "
                    f"leave present in only {room} samples; lower the missing rate of one of "
                    f"{group}"
                )
        # moves = [(m1, j1), ..., (mk, jk)]: i takes m1 from j1, j1 takes m2 from j2, ...
        receiver = int(i)
        for m, giver in moves:
            present[receiver, m], present[giver, m] = True, False
            receiver = giver
        held[i] += 1
        held[receiver] -= 1


def _pick_pair(
    i: int, present: np.ndarray, has: np.ndarray, held: np.ndarray, generator: torch.Generator
) -> tuple[int, int] | None:
    """A uniform (seeded) pair (m, j): m in the data of i, j holding m and another modality.

    Rejection sampling over all (j, m) first (cheap while such pairs are common), then a full
    scan; both pick uniformly among the valid pairs. None where there is no valid pair.
    """
    num_samples, num_modalities = present.shape
    tries = torch.randint(num_samples * num_modalities, (_TRIES,), generator=generator).numpy()
    j, m = np.divmod(tries, num_modalities)
    valid = np.flatnonzero(present[j, m] & (held[j] >= 2) & has[i, m])
    if valid.size:
        return int(m[valid[0]]), int(j[valid[0]])
    pairs = np.flatnonzero((present & (held >= 2)[:, None] & has[i][None, :]).ravel())
    if not pairs.size:
        return None
    j_, m_ = divmod(int(pairs[_pick(pairs.size, generator)]), num_modalities)
    return m_, j_


def _pick(size: int, generator: torch.Generator) -> int:
    """A seeded uniform index in [0, size)."""
    return int(torch.randint(size, (1,), generator=generator))


def _find_chain(
    i: int,
    present: np.ndarray,
    has: np.ndarray,
    held: np.ndarray,
    generator: torch.Generator,
) -> tuple[list[tuple[int, int]], list[int]]:
    """Breadth-first search over modalities for moves that give empty sample i a modality.

    Returns the moves ``[(m1, j1), ..., (mk, jk)]`` (i takes m1 from j1, j1 takes m2 from j2,
    ..., j_k holds two or more) and the modalities reached; no moves where there is no chain.
    """
    # parent[m] = (m', j): j holds only m', its data has m, so j can take m and give up m'.
    parent: dict[int, tuple[int, int] | None] = {int(m): None for m in np.flatnonzero(has[i])}
    queue = list(parent)
    while queue:
        m = queue.pop(0)
        givers = np.flatnonzero(present[:, m] & (held >= 2))
        if givers.size:
            moves = [(m, int(givers[_pick(givers.size, generator)]))]
            while (step := parent[moves[0][0]]) is not None:
                moves.insert(0, step)
            return moves, sorted(parent)
        singles = present[:, m] & (held == 1)
        for target in np.flatnonzero((has[singles] & ~present[singles]).any(axis=0)):
            if int(target) not in parent:
                takers = np.flatnonzero(singles & has[:, target] & ~present[:, target])
                parent[int(target)] = (m, int(takers[_pick(takers.size, generator)]))
                queue.append(int(target))
    return [], sorted(parent)


def apply_missing_rates(
    data: MultimodalData,
    rates: Sequence[float],
    seed: int,
    *,
    drop_all_missing: bool = False,
) -> MaskedSplit:
    """Mask a split at per-modality missing rates.

    By default every modality m misses exactly ``missing_counts(N, rates)[m]`` of the N samples
    (counting the data's own missing entries: the masks only remove what ``data.present`` has)
    and no sample misses every modality; nothing is dropped. See :func:`draw_presence`.

    Args:
        data: the split (e.g. the training split).
        rates: missing rate per modality, in ``data.modalities`` order.
        seed: seed of the masks.
        drop_all_missing: instead draw each modality's missing samples independently and drop
            the samples left with nothing (the behaviour before exact rates): the actual rates
            on the kept samples then differ from the stated ones and are reported in
            :attr:`MaskedSplit.actual_rates`. Works for any rates in [0, 1].

    Raises:
        ValueError: rates that are impossible without dropping samples (why, and which rates
            would work), or a modality the data itself misses more often than its rate.
    """
    if len(rates) != data.num_modalities:
        raise ValueError(f"{len(rates)} missing rates given for {data.num_modalities} modalities")
    present = draw_presence(
        len(data),
        rates,
        seed,
        available=data.present,
        allow_all_missing=drop_all_missing,
        modalities=data.modalities,
    )
    kept = torch.nonzero(present != 0).flatten()
    masked = data.with_presence(present).subset(kept)
    actual = observed_missing_rates(masked)
    stated = {name: float(rate) for name, rate in zip(data.modalities, rates)}
    return MaskedSplit(masked, kept, len(data) - kept.shape[0], stated, actual)


def pattern_probability(pattern: int, rates: Sequence[float]) -> float:
    """P(S): the probability that independent draws at missing rates ``rates`` keep exactly the
    modalities of the bitmask ``pattern``, ``prod_{m in S} (1 - r_m) prod_{m not in S} r_m``."""
    return math.prod(
        1.0 - rate if (pattern >> m) & 1 else rate for m, rate in enumerate(rates)
    )


def pattern_quotas(num_samples: int, rates: Sequence[float]) -> dict[int, int]:
    """How many of ``num_samples`` samples the quota scheme gives each non-empty presence
    pattern S (a bitmask over the modalities): ``floor(N P(S))``
    (:func:`pattern_probability`), and 1 where that floor is 0 although P(S) > 0.

    The floor takes a 1e-9 tolerance, so a product that is whole in decimal (N=100, P=0.21) is
    not floored below it. Every non-empty pattern is a key, in increasing order.

    Example:
        >>> pattern_quotas(10, (0.5, 0.5))  # P = 1/4 each; 4 samples left over
        {1: 2, 2: 2, 3: 2}
    """
    quotas = {}
    for pattern in range(1, 1 << len(rates)):
        probability = pattern_probability(pattern, rates)
        quota = math.floor(num_samples * probability + _HALF_TOLERANCE)
        quotas[pattern] = max(quota, 1) if probability > 0 else 0
    return quotas


def apply_quota_masks(data: MultimodalData, rates: Sequence[float], seed: int) -> MaskedSplit:
    """Mask a split by filling a quota per presence pattern (the scheme of PASSION's BraTS
    splits) instead of per modality.

    Each non-empty pattern S of modalities goes to exactly :func:`pattern_quotas` ``[S]`` =
    ``floor(N P(S))`` samples (at least one where P(S) > 0), on a seeded random permutation of
    the samples. The samples left over (the all-missing pattern's share ``N P(empty)`` and what
    the floors drop) each get a non-empty pattern drawn independently with probability
    proportional to P(S): independent draws at the rates, redrawn until the sample keeps a
    modality. So no sample misses every modality, and the rates are not exact: modality m
    misses the quotas of the patterns without m plus the leftover samples drawn without it
    (near N r_m, usually a little under: the leftovers are never empty). Seeded by the stream
    ``(seed, "masks")`` of :mod:`mce.support.seeding`; the same for the same arguments.

    :func:`apply_missing_rates` (the ``exact`` scheme) instead fixes how many samples miss each
    modality (N r_m rounded half up, exactly) and draws which, leaving the patterns to chance;
    it repairs samples left with nothing by moving a modality to them, or refuses rates that
    cannot leave every sample one.

    Args:
        data: the split (e.g. the training split); every sample must have every modality.
        rates: missing rate per modality, in ``data.modalities`` order, each in [0, 1].
        seed: seed of the masks.

    Returns:
        A :class:`MaskedSplit` that keeps every sample (``dropped`` 0).

    Raises:
        ValueError: a rate outside [0, 1] or a count of rates other than the modalities'; a
            sample the data itself lacks a modality in; more quotas than samples (a small
            split: every pattern of positive P(S) takes one); rates of 1 for every modality.

    Example:
        >>> from mce.data.bundled import load_bundled_digits
        >>> masked = apply_quota_masks(load_bundled_digits(), (0.5, 0.5), seed=0)
        >>> int((masked.data.present == 0).sum())
        0
    """
    names, num_samples = data.modalities, len(data)
    if len(rates) != data.num_modalities:
        raise ValueError(f"{len(rates)} missing rates given for {data.num_modalities} modalities")
    for name, rate in zip(names, rates):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"missing rate {rate} of {name!r} is outside [0, 1]")
    stated = {name: float(rate) for name, rate in zip(names, rates)}
    full = (1 << len(rates)) - 1
    lacking = torch.nonzero(data.present.cpu() != full).flatten()
    if lacking.numel():
        n = int(lacking[0])
        label = data.ids[n] if data.ids else str(n)
        raise ValueError(
            f"quota masks need every modality in every sample, and sample {label} misses some "
            f"in the data ({lacking.numel()} such samples); use mask_scheme='exact', which "
            "counts the data's own missing entries"
        )
    if not any(rate < 1.0 for rate in rates):
        raise ValueError(f"missing rates {stated} leave no sample a modality; lower one below 1")
    quotas = pattern_quotas(num_samples, rates)
    filled = sum(quotas.values())
    if filled > num_samples:
        raise ValueError(
            f"quota masks at missing rates {stated} need at least {filled} samples (one per "
            f"presence pattern of positive probability), and the split has {num_samples}; use "
            "mask_scheme='exact'"
        )
    generator = stream(seed, "masks")
    order = torch.randperm(num_samples, generator=generator)
    patterns = [pattern for pattern, quota in quotas.items() for _ in range(quota)]
    leftover = num_samples - filled
    if leftover:
        weights = torch.tensor([pattern_probability(s, rates) for s in quotas], dtype=torch.float64)
        drawn = torch.multinomial(weights, leftover, replacement=True, generator=generator)
        patterns += (drawn + 1).tolist()  # the keys of quotas are 1, 2, ..., full
    present = torch.empty(num_samples, dtype=torch.int64)
    present[order] = torch.tensor(patterns, dtype=torch.int64)
    masked = data.with_presence(present)
    actual = observed_missing_rates(masked)
    return MaskedSplit(masked, torch.arange(num_samples), 0, stated, actual)


def presence_from_csv(path: str | os.PathLike[str], data: MultimodalData) -> MaskedSplit:
    """Masks read from a presence CSV instead of drawn, to reproduce a published split exactly.

    The layout is told by the header (:func:`mce.data.presence.read_presence` describes each):
    ``sample_token`` (or ``id``) and a 0/1 column per modality; PASSION's BraTS splits
    (``data_name,mask_id,mask,pos_mask_ids``); MCE's nuScenes tables
    (``Camera,LiDAR,RADAR,Count``, rows matched to the samples by position). The file must
    list every sample of ``data`` once and no other.

    Raises:
        ValueError: the file cannot be read or is malformed (header, a value the layout does
            not allow, an id listed twice), ``data``'s modalities are not the layout's, an id
            of no sample of ``data``, a sample of ``data`` with no row, a row that keeps no
            modality or one the data itself lacks; each named (see
            :func:`~mce.data.presence.read_presence`).
    """
    masked = data.with_presence(read_presence(path, data))
    actual = observed_missing_rates(masked)
    return MaskedSplit(masked, torch.arange(len(masked)), 0, dict(actual), actual)


def as_it_is(data: MultimodalData) -> MaskedSplit:
    """The split with its own presence, no masks drawn: what a run trains on when no missing
    rates were stated and the data already lacks modalities. Its rates (stated and actual) are
    the data's own, the least any stated rates can be (:func:`apply_missing_rates`).

    Raises:
        ValueError: a sample with no modality (named, with their count).
    """
    empty = torch.nonzero(data.present.cpu() == 0).flatten()
    if empty.numel():
        n = int(empty[0])
        label = data.ids[n] if data.ids else str(n)
        raise ValueError(
            f"sample {label} has no modality in the data ({empty.numel()} such samples); "
            "drop them first"
        )
    actual = observed_missing_rates(data)
    return MaskedSplit(data, torch.arange(len(data)), 0, dict(actual), actual)


def observed_missing_rates(data: MultimodalData) -> dict[str, float]:
    """Modality name -> the fraction of ``data``'s samples that miss it (1 for no sample)."""
    missing = (~presence_matrix(data.present, data.num_modalities)).sum(dim=0)
    return {
        name: float(missing[m]) / len(data) if len(data) else 1.0
        for m, name in enumerate(data.modalities)
    }
