"""Seeded missing masks at exact rates, presets and rate parsing."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch

from mce.data.bundled import load_bundled_digits
from mce.data.dataset import MultimodalData
from mce.data.masks import (
    PRESETS,
    apply_missing_rates,
    draw_presence,
    missing_count,
)


def expected_missing(num_samples: int, rate: float) -> int:
    """The contract, written out independently: N rate rounded half up."""
    return math.floor(num_samples * rate + 0.5 + 1e-9)


def expected_counts(num_samples: int, rates, at_least=None) -> list[int]:
    """Rounded half up; where that leaves fewer present entries than samples although
    sum(1 - r) >= 1, the largest round-ups become round-downs until one modality per sample fits
    (never below what the data itself already misses, ``at_least``).
    """
    counts = [expected_missing(num_samples, rate) for rate in rates]
    floor = at_least or [0] * len(rates)
    if sum(1 - rate for rate in rates) < 1 - 1e-9:
        return counts
    excess = [counts[m] - num_samples * rates[m] for m in range(len(rates))]
    order = [m for m in sorted(range(len(rates)), key=lambda m: -excess[m]) if excess[m] > 0]
    for m in order:
        if sum(num_samples - k for k in counts) >= num_samples:
            break
        if counts[m] > floor[m]:
            counts[m] -= 1
    return counts


def column_missing(present: torch.Tensor, num_samples: int, num_modalities: int) -> list[int]:
    return [num_samples - int(((present >> m) & 1).sum()) for m in range(num_modalities)]


def feasible(num_samples: int, rates, has: np.ndarray) -> bool:
    """Brute force (Hall's condition over sets of modalities): can each modality m be present in
    exactly N - k_m samples that have it in the data, with every sample keeping one?"""
    own = [num_samples - int(has[:, m].sum()) for m in range(len(rates))]
    counts = expected_counts(num_samples, rates, own)
    room = [num_samples - k for k in counts]
    if any(int(has[:, m].sum()) < room[m] for m in range(len(rates))):
        return False
    for size in range(1, len(rates) + 1):
        for group in itertools.combinations(range(len(rates)), size):
            outside = [m for m in range(len(rates)) if m not in group]
            only_group = int((~has[:, outside]).all(axis=1).sum()) if outside else num_samples
            if only_group > sum(room[m] for m in group):
                return False
    return True


def random_cases(count: int, seed: int):
    """(N, rates, seed) over M in 1..5, N in 1..500, rates in [0, 1) (often near feasibility)."""
    rng = random.Random(seed)
    for _ in range(count):
        num_modalities = rng.randint(1, 5)
        num_samples = rng.choice([1, 2, 3, 7, 10, rng.randint(1, 60), rng.randint(1, 500)])
        rates = tuple(
            rng.choice([0.0, 0.5, rng.random(), min(0.99, rng.random() + 0.4)])
            for _ in range(num_modalities)
        )
        yield num_samples, rates, rng.randint(0, 2**31 - 1)


def test_exact_rates_and_seeding():
    present = draw_presence(1000, (0.2, 0.5, 0.8), seed=3)
    for m, rate in enumerate((0.2, 0.5, 0.8)):
        assert int(((present >> m) & 1).sum()) == 1000 - round(1000 * rate)
    assert torch.equal(present, draw_presence(1000, (0.2, 0.5, 0.8), seed=3))
    assert not torch.equal(present, draw_presence(1000, (0.2, 0.5, 0.8), seed=4))
    assert (present != 0).all()


@pytest.mark.parametrize(
    ("num_samples", "rate", "missing"),
    # N rate = 3.5, 2.5, 1.8, 0.5: truncation gives 3, 2, 1, 0 and Python's round 4, 2, 2, 0.
    [(7, 0.5, 4), (10, 0.25, 3), (3, 0.6, 2), (1, 0.5, 1), (10, 0.35, 4), (10, 0.24, 2)],
)
def test_counts_are_rounded_half_up_not_truncated(num_samples, rate, missing):
    assert missing_count(num_samples, rate) == missing
    present = draw_presence(num_samples, (rate, 0.0), seed=0)
    assert column_missing(present, num_samples, 2) == [missing, 0]
    masked = apply_missing_rates(_digits(num_samples), (rate, 0.0), seed=0)
    assert masked.actual_rates["image"] == missing / num_samples


def test_property_exact_counts_no_empty_sample_seeded():
    checked_feasible = checked_infeasible = 0
    for num_samples, rates, seed in random_cases(400, seed=0):
        counts = expected_counts(num_samples, rates)
        if sum(num_samples - k for k in counts) < num_samples:
            assert sum(1 - rate for rate in rates) < 1
            with pytest.raises(ValueError, match="every sample a modality"):
                draw_presence(num_samples, rates, seed)
            checked_infeasible += 1
            continue
        present = draw_presence(num_samples, rates, seed)
        assert present.shape == (num_samples,) and present.dtype == torch.int64
        assert column_missing(present, num_samples, len(rates)) == counts, (num_samples, rates)
        assert (present != 0).all(), (num_samples, rates, seed)
        assert (present < (1 << len(rates))).all()
        assert torch.equal(present, draw_presence(num_samples, rates, seed))
        if num_samples >= 50 and any(5 <= k <= num_samples - 5 for k in counts):
            assert not torch.equal(present, draw_presence(num_samples, rates, seed + 1))
        checked_feasible += 1
    assert checked_feasible > 150 and checked_infeasible > 50


def test_repair_only_moves_entries_of_samples_left_empty():
    """The masks are the independent draws except for one moved entry per empty sample."""
    for num_samples, rates, seed in random_cases(200, seed=1):
        counts = [expected_missing(num_samples, rate) for rate in rates]
        if sum(num_samples - k for k in counts) < num_samples:
            continue
        independent = draw_presence(num_samples, rates, seed, allow_all_missing=True)
        repaired = draw_presence(num_samples, rates, seed)
        assert column_missing(independent, num_samples, len(rates)) == counts
        empty = int((independent == 0).sum())
        changed = sum(int((((independent ^ repaired) >> m) & 1).sum()) for m in range(len(rates)))
        assert changed == 2 * empty
        keep = independent != 0
        assert ((repaired[keep] & ~independent[keep]) == 0).all()  # donors only lose entries


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        ((0.8, 0.5), r"present fractions sum to 0\.7 < 1"),
        ((0.9, 0.9, 0.9), r"present fractions sum to 0\.3 < 1"),
        ((0.5,), r"present fractions sum to 0\.5 < 1"),
    ],
)
def test_infeasible_rates_say_why_and_what_works(rates, message):
    with pytest.raises(ValueError, match=message) as error:
        draw_presence(100, rates, seed=0)
    assert "lower some rate so that sum(1 - rate) >= 1" in str(error.value)
    with pytest.raises(ValueError, match="drop_all_missing=True"):
        apply_missing_rates(_digits(100, len(rates)), rates, seed=0)


def test_rounding_gives_way_where_only_rounding_down_fits():
    # sum(1 - r) = 1, but at odd N both counts would round up: one rounds down instead.
    assert column_missing(draw_presence(1, (0.5, 0.5), seed=0), 1, 2) == [0, 1]
    assert column_missing(draw_presence(1257, (0.5, 0.5), seed=0), 1257, 2) == [628, 629]
    assert column_missing(draw_presence(2, (0.5, 0.5), seed=0), 2, 2) == [1, 1]
    # Each count stays within one sample of N r; the round-up rule holds where it fits.
    assert column_missing(draw_presence(7, (0.5, 0.4), seed=0), 7, 2) == [4, 3]


def test_apply_missing_rates_keeps_every_sample_at_the_stated_rates():
    data = load_bundled_digits()
    masked = apply_missing_rates(data, (0.8, 0.2), seed=0)
    assert masked.dropped == 0
    assert torch.equal(masked.kept, torch.arange(len(data)))
    assert len(masked.data) == len(data)
    assert (masked.data.present != 0).all()
    assert masked.stated_rates == {"image": 0.8, "audio": 0.2}
    n = len(data)
    assert masked.actual_rates == {
        "image": expected_missing(n, 0.8) / n,
        "audio": expected_missing(n, 0.2) / n,
    }
    for name, rate in masked.stated_rates.items():
        assert abs(masked.actual_rates[name] - rate) <= 0.5 / n
    absent = (masked.data.present & 1) == 0
    assert (masked.data.inputs["image"][absent] == 0).all()
    assert torch.equal(masked.data.present, apply_missing_rates(data, (0.8, 0.2), 0).data.present)


def test_all_missing_samples_are_dropped_and_counted_when_asked():
    data = load_bundled_digits()
    masked = apply_missing_rates(data, (0.5, 0.5), seed=0, drop_all_missing=True)
    independent = draw_presence(len(data), (0.5, 0.5), 0, allow_all_missing=True)
    expected_dropped = int((independent == 0).sum())
    assert masked.dropped == expected_dropped > 0
    assert len(masked.data) == len(data) - expected_dropped
    assert torch.equal(masked.kept, torch.nonzero(independent != 0).flatten())
    assert (masked.data.present != 0).all()
    # Absent inputs are zeroed.
    absent = (masked.data.present & 1) == 0
    assert (masked.data.inputs["image"][absent] == 0).all()
    # The actual rates are those of the kept samples, below the stated ones.
    kept = len(masked.data)
    for m, name in enumerate(data.modalities):
        missing = kept - int(((masked.data.present >> m) & 1).sum())
        assert masked.actual_rates[name] == missing / kept < 0.5
    # Infeasible rates are allowed when dropping.
    masked = apply_missing_rates(data, (0.8, 0.5), seed=0, drop_all_missing=True)
    assert masked.dropped > 0 and masked.stated_rates == {"image": 0.8, "audio": 0.5}


def test_property_data_with_its_own_missing_modalities():
    rng = random.Random(2)
    checked = {True: 0, False: 0}
    for num_samples, rates, seed in random_cases(300, seed=3):
        num_modalities = len(rates)
        own_rate = rng.choice([0.0, 0.1, 0.3, 0.6])
        has = np.array(
            [[rng.random() >= own_rate for _ in range(num_modalities)] for _ in range(num_samples)]
        )
        has[~has.any(axis=1), rng.randrange(num_modalities)] = True  # data samples have one
        available = torch.from_numpy((has * (1 << np.arange(num_modalities))).sum(axis=1))
        ok = feasible(num_samples, rates, has)
        checked[ok] += 1
        if not ok:
            with pytest.raises(ValueError):
                draw_presence(num_samples, rates, seed, available=available)
            continue
        present = draw_presence(num_samples, rates, seed, available=available)
        own = [num_samples - int(has[:, m].sum()) for m in range(num_modalities)]
        counts = expected_counts(num_samples, rates, own)
        assert column_missing(present, num_samples, num_modalities) == counts
        assert (present != 0).all()
        assert ((present & ~available) == 0).all(), "a modality the data lacks was made present"
        assert torch.equal(present, draw_presence(num_samples, rates, seed, available=available))
    assert checked[True] > 80 and checked[False] > 40


def test_data_missing_more_than_the_rate_names_modality_and_achievable_rate():
    presence = np.ones((10, 2), dtype=bool)
    presence[:4, 1] = False  # audio already misses 4 of 10
    data = _digits(10).with_presence(torch.from_numpy((presence * [1, 2]).sum(axis=1)))
    with pytest.raises(
        ValueError, match=r"'audio'.*0\.4.*stated missing rate 0\.2.*0\.4 and above"
    ):
        apply_missing_rates(data, (0.0, 0.2), seed=0)
    masked = apply_missing_rates(data, (0.3, 0.5), seed=0)
    assert masked.actual_rates == {"image": 0.3, "audio": 0.5}
    assert ((masked.data.present[:4] & 2) == 0).all()


def test_data_whose_own_missingness_blocks_a_repair_says_which_modalities():
    # Samples 0-5 have only image in the data, but image may be present in only 5 of 10.
    presence = np.ones((10, 3), dtype=bool)
    presence[:6, 1:] = False
    data = MultimodalData.from_arrays(
        {name: np.zeros((10, 2)) for name in ("image", "audio", "text")}, np.zeros(10), presence
    )
    with pytest.raises(ValueError, match=r"6 samples have in the data only .*\['image'\].* 5 "):
        apply_missing_rates(data, (0.5, 0.6, 0.6), seed=0)


def test_repair_by_a_chain_of_moves_where_no_single_swap_helps(monkeypatch):
    # Data: s0 {A}, s1 {A, B}, s2 {B, C}, s3 {C}; present counts A 1, B 1, C 2. The one valid
    # mask is s0 A, s1 B, s2 C, s3 C: when the draw leaves A on s1 and B on s2, s0 must take A
    # from s1, which takes B from s2.
    from mce.data import masks

    chains = []
    find_chain = masks._find_chain

    def counting(*args):
        moves, reached = find_chain(*args)
        chains.append(moves)
        return moves, reached

    monkeypatch.setattr(masks, "_find_chain", counting)
    available = torch.tensor([0b001, 0b011, 0b110, 0b100])
    for seed in range(40):
        present = draw_presence(4, (0.75, 0.75, 0.5), seed, available=available)
        assert present.tolist() == [0b001, 0b010, 0b100, 0b100]
    assert any(len(moves) == 2 for moves in chains)


def test_presets_are_the_six_permutations():
    assert len(PRESETS) == 6
    assert PRESETS["a"] == (0.2, 0.5, 0.8)
    assert {tuple(sorted(r)) for r in PRESETS.values()} == {(0.2, 0.5, 0.8)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.2", "1 missing rates given for 2 modalities"),
        ("0.2,1.0", r"outside \[0, 1\)"),
        ("0.2,-0.1", r"outside \[0, 1\)"),
        ("x,y", "must be numbers in"),
    ],
)
def test_bad_rates(text, message):
    """The one missing-rates parser (:func:`mce.training.config.parse_rates`), then one rate per
    modality."""
    from mce.training.config import HyperParameters, parse_rates

    with pytest.raises(ValueError, match=message):
        HyperParameters(missing_rates=parse_rates(text)).rates_for(("image", "audio"))


def _digits(num_samples: int, num_modalities: int = 2) -> MultimodalData:
    """A small full-presence data set with ``num_modalities`` modalities."""
    names = ("image", "audio", "text", "depth", "lidar")[:num_modalities]
    return MultimodalData.from_arrays(
        {name: np.ones((num_samples, 3)) for name in names}, np.zeros(num_samples, dtype=int)
    )


def test_rounding_down_respects_what_the_data_already_misses():
    # Modality 0 is missing from samples 1 and 2 in the data itself: only modality 1 may round
    # down, giving counts (2, 1).
    present = draw_presence(3, (0.5, 0.5), seed=0, available=torch.tensor([0b11, 0b10, 0b10]))
    assert column_missing(present, 3, 2) == [2, 1]
    assert (present != 0).all()
