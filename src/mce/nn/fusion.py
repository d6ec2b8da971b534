"""Fusions of the M modality tokens into one vector. MCE never depends on which is used."""

from __future__ import annotations

from torch import Tensor, nn


class ConcatFusion(nn.Module):
    """Concatenates the M tokens: [R, M, F] -> [R, M F]."""

    def __init__(self, num_modalities: int, dim: int) -> None:
        super().__init__()
        self.out_dim = num_modalities * dim

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens.flatten(1)
