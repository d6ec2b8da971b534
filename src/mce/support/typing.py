"""Named tensor aliases used across mce, with their shapes.

- ``PresentMask``: Tensor[N] int64, bit m set when modality m is present in sample n.
- ``Rows``: Tensor[R, 2] int64, (sample index, subset bitmask), grouped by sample.
- ``Coef``: Tensor[R, M] float32, Monte Carlo Shapley coefficients of the rows.
- ``Phi``: Tensor[N, M] float32, per-sample Shapley values (0 for absent modalities).
"""

from __future__ import annotations

from torch import Tensor

PresentMask = Tensor
Rows = Tensor
Coef = Tensor
Phi = Tensor

__all__ = ["PresentMask", "Rows", "Coef", "Phi"]
