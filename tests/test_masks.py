"""Seeded missing masks, presets and rate parsing."""

from __future__ import annotations

import pytest
import torch

from mce.data.bundled import load_bundled_digits
from mce.data.masks import PRESETS, apply_missing_rates, draw_presence, parse_missing_rates


def test_exact_rates_and_seeding():
    present = draw_presence(1000, (0.2, 0.5, 0.8), seed=3)
    for m, rate in enumerate((0.2, 0.5, 0.8)):
        assert int(((present >> m) & 1).sum()) == 1000 - round(1000 * rate)
    assert torch.equal(present, draw_presence(1000, (0.2, 0.5, 0.8), seed=3))
    assert not torch.equal(present, draw_presence(1000, (0.2, 0.5, 0.8), seed=4))


def test_all_missing_samples_are_dropped_and_counted():
    data = load_bundled_digits()
    masked = apply_missing_rates(data, (0.5, 0.5), seed=0)
    expected_dropped = int((draw_presence(len(data), (0.5, 0.5), 0) == 0).sum())
    assert masked.dropped == expected_dropped > 0
    assert len(masked.data) == len(data) - expected_dropped
    assert (masked.data.present != 0).all()
    # Absent inputs are zeroed.
    absent = (masked.data.present & 1) == 0
    assert (masked.data.inputs["image"][absent] == 0).all()


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
        ("x,y", "not comma-separated numbers"),
    ],
)
def test_bad_rates(text, message):
    with pytest.raises(ValueError, match=message):
        parse_missing_rates(text, 2)
