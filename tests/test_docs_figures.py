"""The figures of the documentation are drawn from the library, and the committed ones match
what the script draws now."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the report extra (matplotlib) draws the figures")

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


def _labels(svg: str) -> list[str]:
    return re.findall(r">(sample \d|L_[a-z]+[^<]*)<", svg)


def _colours(svg: str) -> list[str]:
    """The fill of every cell and legend patch, in drawing order."""
    return re.findall(r"fill: ?(#[0-9a-fA-F]{6})", svg)


def test_the_batched_forward_figure_shows_every_row_of_the_plan(tmp_path: Path) -> None:
    out = tmp_path / "rows.svg"
    subprocess.run([sys.executable, str(FIGURES / "batched_forward.py"), str(out)], check=True)
    drawn = out.read_text()
    samples = [label for label in _labels(drawn) if label.startswith("sample")]
    assert [samples.count(f"sample {n}") for n in range(3)] == [3, 1, 7]  # 2^|A_n| - 1 rows
    committed = (FIGURES / "batched_forward.svg").read_text()
    assert _labels(drawn) == _labels(committed)
    assert _colours(drawn) == _colours(committed) and len(set(_colours(drawn))) >= 3
    assert "figures/batched_forward.svg" in (FIGURES.parent / "concepts.md").read_text()
