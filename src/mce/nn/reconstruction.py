"""The reconstruction module f_rec of MCE (Eqs. 12 and 15)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ReconstructionTransformer(nn.Module):
    """Rebuilds every modality token from the tokens that are present.

    The M modality features are stacked as M tokens (zeros at absent positions), a learned
    per-modality positional encoding E_pos is added, and a Transformer encoder (multi-head
    self-attention + feed-forward) runs over all M tokens, as Eq. 15: at an absent position the
    token is E_pos alone, a learned mask token that every token attends to like the others, so
    the Transformer learns how to read absence (the paper's Sec. 3.5; the authors' code passes
    no attention mask either). Its output holds a token for every modality: reconstructions at
    the absent positions (used by L_aux, Eq. 13), refined features at the present ones.

    Args:
        num_modalities: M.
        dim: feature size F of every token.
        heads: attention heads.
        layers: Transformer encoder layers.
        ff_dim: feed-forward width.
        dropout: dropout inside the Transformer.
    """

    def __init__(
        self,
        num_modalities: int,
        dim: int,
        heads: int = 4,
        layers: int = 1,
        ff_dim: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.positional = nn.Parameter(torch.randn(num_modalities, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, ff_dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, tokens: Tensor, kept: Tensor) -> Tensor:
        """tokens: Tensor[R, M, F]; kept: Tensor[R, M] bool -> [R, M, F]. A token not kept is
        zeroed here (whatever it held), so it enters attention as its mask token E_pos."""
        x = tokens * kept.unsqueeze(-1).to(tokens.dtype) + self.positional  # (R, M, F)
        return self.encoder(x)
