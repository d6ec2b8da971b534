"""RedCore's networks (Sun et al., AAAI 2024, as its released code builds them): variational
encoders and cross-modal imagination.

- :class:`VariationalEncoder` puts a mean and a log-variance head on a task's encoder (the
  released code's VIB ``Transformer`` ends in the same pair of heads) and samples
  z = mu + eps exp(logvar / 2) in training.
- :class:`ResidualXE` is the released code's imagination network (``ResidualXE``: residual
  blocks of a fully connected encoder and decoder, then a two-layer transition).
- :class:`CrossModalImagination` holds one :class:`ResidualXE` per modality, imagining that
  modality's token from the other modalities' tokens, and imputes absent tokens with their
  imagined value. It takes the place of a model's reconstruction module, so
  :meth:`mce.nn.model.MultimodalModel.forward_rows` (and the dense model's, voxel by voxel) imputes
  every missing modality with no change elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn

__all__ = ["VariationalEncoder", "ResidualXE", "CrossModalImagination"]


class VariationalEncoder(nn.Module):
    """A task's encoder with a mean and a log-variance head on its (last) features.

    The heads are ``nn.Linear(channels, channels)`` over the channel dimension, dim 1 of
    ``[B, C]`` or ``[B, C, *spatial]`` features; for an encoder returning a tuple of levels
    (fine to coarse) only the last level, the bottleneck, is made variational and the others
    pass through. Returns z = mu + eps exp(logvar / 2) in training mode and mu in eval mode
    (the released code samples at test time too; mu makes evaluation deterministic).

    Each call keeps the per-sample KL divergence to N(0, I) in :attr:`last_kl`, Tensor[B]:
    ``-(1 + logvar - mu^2 - exp(logvar))`` summed over channels, without the usual 1/2 (as the
    released code), and averaged over the spatial positions of dense features. Encoders run on
    the present samples only (:meth:`mce.nn.model.MultimodalModel.encode`), so it covers present
    modalities only.

    The log-variance head starts at ``initial_log_var`` for every input (zero weights), so
    the noise starts at sigma = exp(initial_log_var / 2), 0.05 by default, as Deep VIB starts
    its sigma small (softplus(x - 5), Alemi et al., ICLR 2017). The released code's
    initialisation gives sigma about 1 (``initial_log_var=0``): its encoder hands the heads
    sigmoid outputs that differ across samples from the start, while a task encoder's initial
    features may hardly differ (LeNet-5's image features: by a standard deviation of about 0.002
    across samples), so that noise drowns them and the imagination loss, whose target is not
    detached, collapses them.

    Args:
        encoder: maps a batch of one modality to [B, C(, *spatial)] or a tuple of levels; its
            ``context_key`` (side data it needs) stays visible.
        channels: C, the channels of the (last) feature level.
        initial_log_var: log sigma^2 of the noise at initialisation.
    """

    def __init__(self, encoder: nn.Module, channels: int, initial_log_var: float = -6.0) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.encoder = encoder
        self.channels = channels
        self.mean = nn.Linear(channels, channels)
        self.log_var = nn.Linear(channels, channels)
        nn.init.zeros_(self.log_var.weight)
        nn.init.constant_(self.log_var.bias, initial_log_var)
        self.last_kl: Tensor | None = None

    @property
    def context_key(self) -> str | None:
        """The wrapped encoder's ``context_key`` (read by :func:`mce.nn.model.run_encoder`)."""
        return getattr(self.encoder, "context_key", None)

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor | tuple[Tensor, ...]:
        """``encoder(x, *args, **kwargs)`` with its (last) features replaced by z."""
        features = self.encoder(x, *args, **kwargs)
        levels = features if isinstance(features, tuple) else (features,)
        last = levels[-1]
        if last.dim() < 2 or last.shape[1] != self.channels:
            raise ValueError(
                f"the encoder's features must be [B, {self.channels}, ...], got {list(last.shape)}"
            )
        channels_last = last.movedim(1, -1)  # (B, *spatial, C)
        mu = self.mean(channels_last)
        log_var = self.log_var(channels_last)
        kl = -(1 + log_var - mu.pow(2) - log_var.exp()).sum(-1)  # (B, *spatial)
        self.last_kl = kl.flatten(1).mean(1) if kl.dim() > 1 else kl
        z = mu
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        z = z.movedim(-1, 1)
        return (*levels[:-1], z) if isinstance(features, tuple) else z


class ResidualXE(nn.Module):
    """The released code's imagination network: residual blocks, then a transition.

    Each of ``blocks`` blocks has an encoder (Linear input -> hidden[0], LeakyReLU, ...,
    Linear -> hidden[-1], no final activation) and a decoder (Linear hidden[-1] -> ... ->
    hidden[0] with ReLUs, then Linear -> input). With x_out = 0 at first, each block computes
    x_in = x_in + x_out, x_out = decoder(encoder(x_in)); the output is
    transition(x_in + x_out), transition = Linear(input, input), ReLU, Linear(input, output).
    No dropout or batch norm (``dropout=0, use_bn=False`` in the released code).

    Args:
        input_dim: features in. output_dim: features out.
        hidden: widths of each block's encoder, e.g. (256, 128, 64).
        blocks: residual blocks.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden: Sequence[int], blocks: int) -> None:
        super().__init__()
        widths = [input_dim, *hidden]
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for _ in range(blocks):
            encoder: list[nn.Module] = []
            for first, second in pairwise(widths):
                encoder += [nn.Linear(first, second), nn.LeakyReLU()]
            self.encoders.append(nn.Sequential(*encoder[:-1]))
            decoder: list[nn.Module] = []
            for first, second in pairwise(widths[::-1]):
                decoder += [nn.Linear(first, second), nn.ReLU()]
            self.decoders.append(nn.Sequential(*decoder[:-1]))
        self.transition = nn.Sequential(
            nn.Linear(input_dim, input_dim), nn.ReLU(), nn.Linear(input_dim, output_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[B, input_dim] -> Tensor[B, output_dim]."""
        x_in, x_out = x, torch.zeros_like(x)
        for encoder, decoder in zip(self.encoders, self.decoders):
            x_in = x_in + x_out
            x_out = decoder(encoder(x_in))
        return self.transition(x_in + x_out)


class CrossModalImagination(nn.Module):
    """Imagines each modality's token from the others' and imputes the absent ones.

    Network m maps the concatenation of the other modalities' tokens, in modality (mask)
    order with zeros where absent, to modality m's token. (The released code concatenates its
    fusion input in an order that contradicts its mask order; here one order serves both.)

    Args:
        num_modalities: M >= 2.
        channels: C, the size of one token.
        hidden: widths of each :class:`ResidualXE` block's encoder.
        blocks: residual blocks of each network.

    Example:
        >>> imagination = CrossModalImagination(3, 8, hidden=(16, 8), blocks=2)
        >>> tokens, kept = torch.randn(4, 3, 8), torch.tensor([[True, False, True]] * 4)
        >>> imagination(tokens * kept[..., None], kept).shape
        torch.Size([4, 3, 8])
    """

    def __init__(
        self, num_modalities: int, channels: int, hidden: Sequence[int], blocks: int
    ) -> None:
        super().__init__()
        if num_modalities < 2:
            raise ValueError(
                f"cross-modal imagination needs at least 2 modalities, got {num_modalities}"
            )
        self.num_modalities, self.channels = num_modalities, channels
        self.networks = nn.ModuleList(
            ResidualXE((num_modalities - 1) * channels, channels, hidden, blocks)
            for _ in range(num_modalities)
        )

    def imagine_modality(self, tokens: Tensor, m: int) -> Tensor:
        """Modality m imagined from the others' tokens: Tensor[R, M, C] -> Tensor[R, C]."""
        others = torch.cat([tokens[:, :m], tokens[:, m + 1 :]], dim=1)  # (R, M-1, C)
        return self.networks[m](others.flatten(1))

    def imagine(self, tokens: Tensor) -> Tensor:
        """Every modality imagined from the others: Tensor[R, M, C] -> Tensor[R, M, C]."""
        return torch.stack([self.imagine_modality(tokens, m) for m in range(len(self.networks))], 1)

    def imagine_features(self, features: Tensor, m: int) -> Tensor:
        """:meth:`imagine_modality` at every position of channel-major features:
        Tensor[N, M, C P] (P positions, as :meth:`mce.nn.dense.DenseMultimodalModel.feature_tokens`
        lays them out; P = 1 for [N, M, C]) -> Tensor[N, C P], modality m imagined at each
        position from the others' tokens there."""
        num, modalities, size = features.shape
        if size % self.channels:
            raise ValueError(
                f"features of size {size} are not channel-major tokens of {self.channels}"
            )
        positions = size // self.channels
        per_position = features.view(num, modalities, self.channels, positions)
        tokens = per_position.permute(0, 3, 1, 2).reshape(num * positions, modalities, -1)
        imagined = self.imagine_modality(tokens, m).view(num, positions, self.channels)
        return imagined.transpose(1, 2).reshape(num, size)

    def forward(self, tokens: Tensor, kept: Tensor) -> Tensor:
        """Imputation: tokens Tensor[R, M, C] (zeros where not kept), kept Tensor[R, M] bool ->
        the real token where kept, the imagined one elsewhere (only those rows are imagined:
        each row's network input is its tokens as given)."""
        imputed = tokens
        for m in range(self.num_modalities):
            missing = torch.nonzero(~kept[:, m]).flatten()
            if missing.numel():
                imagined = self.imagine_modality(tokens[missing], m)
                imputed = imputed.index_put((missing, torch.full_like(missing, m)), imagined)
        return imputed
