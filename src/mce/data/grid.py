"""The BEV grid's former place: it lives in :mod:`mce.grid`, where the reader and the model
may both use it."""

from __future__ import annotations

from mce.grid import Grid3D

__all__ = ["Grid3D"]
