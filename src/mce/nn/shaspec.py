"""ShaSpec's networks (Wang et al., CVPR 2023): a shared encoder beside each modality's own,
the compositional layer, the domain classifier and the substitution of absent modalities.

An adapted encoder (:class:`SharedSpecificEncoder`) returns ``[composed; shared]`` stacked on
the channel dimension (dim 1) of its last level: ``2 C`` channels, the first ``C`` the
composed feature ``f = shared + W cat(shared, specific)``, the last ``C`` the shared feature.
So the features ``h`` of :meth:`mce.nn.model.MultimodalModel.encode` carry each present (sample,
modality)'s shared feature to ``forward_rows``, whose reconstruction slot
(:class:`SharedSubstitution`) puts the shared feature of a row's first kept modality in place
of each absent modality's composed feature; the fusion and the unimodal heads read the composed
half only (:class:`ComposedHalf`).

The shared network is one of two kinds (:func:`same_architecture` decides for ``"auto"``):

- ``copy``: every modality's encoder has the same architecture (BraTS: four 3D U-Net encoders
  on [B, 1, D, H, W]); the shared encoder is one more of them (:func:`fresh_copy`), applied to
  every modality, as the released code's ``shared_enc``.
- ``stems``: the modalities' inputs differ (images and audio, LSTM and TextCNN, camera and
  point clouds), so no one network reads them all; each modality gets a stem, a fresh copy of
  its own encoder, and one :class:`ChannelMLP` shared by all modalities maps every stem's
  features into the shared space.

For an encoder returning levels fine to coarse (the dense model), the composition acts on the
last level (the bottleneck) and the other levels (the decoder's skips) are the shared path's
(the shared encoder's, or the stem's), as the released decoder reads its skips from the shared
encoder.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "ChannelMLP",
    "CompositionalLayer",
    "ShaSpecShared",
    "SharedSpecificEncoder",
    "SharedSubstitution",
    "ComposedHalf",
    "fresh_copy",
    "same_architecture",
]

_PLAIN = (int, float, str, bool, type(None))


def _channels_last(layer: nn.Module, x: Tensor) -> Tensor:
    """``layer`` over the channel dimension (dim 1) of [B, C] or [B, C, *spatial]."""
    return layer(x.movedim(1, -1)).movedim(-1, 1)


def fresh_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every submodule's ``reset_parameters`` (or
    ``_reset_parameters``, as ``nn.MultiheadAttention``'s) called: the same architecture, drawn
    anew from the global generator. Parameters a module creates without such a method keep the
    copied values."""
    fresh = copy.deepcopy(module)
    for sub in fresh.modules():
        reset = getattr(sub, "reset_parameters", None) or getattr(sub, "_reset_parameters", None)
        if callable(reset):
            reset()
    return fresh


def _signature(module: nn.Module) -> list:
    """Types, plain attributes (sizes, paddings, flags) and tensor shapes of every submodule."""
    parts: list = []
    for name, sub in module.named_modules():
        plain = {}
        for key, value in vars(sub).items():
            if key.startswith("_") or key == "training":
                continue
            if isinstance(value, _PLAIN) or (
                isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value)
            ):
                plain[key] = value
        parts.append((name, type(sub), sorted(plain.items())))
    parts.extend((key, tuple(value.shape)) for key, value in module.state_dict().items())
    return parts


def same_architecture(encoders: Sequence[nn.Module]) -> bool:
    """Whether every encoder is the same network up to its weights: the same module types,
    plain attributes (e.g. LeNet-5's input padding, which differs with the input size) and
    parameter shapes, so one shared copy can read every modality's input."""
    first = _signature(encoders[0])
    return all(_signature(encoder) == first for encoder in encoders[1:])


class ChannelMLP(nn.Module):
    """The shared network after per-modality stems: Linear(C, C), ReLU, Linear(C, C) over the
    channels of [B, C] or, at every position, of [B, C, *spatial] features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = nn.Linear(channels, channels)
        self.second = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return _channels_last(self.second, torch.relu(_channels_last(self.first, x)))


class CompositionalLayer(nn.Module):
    """f = shared + W cat(shared, specific): the released code's residual ``compos_layer``,
    one layer for every modality. W is a bias-free linear map of the 2 C channels to C at each
    position (the released code's is a 3x3x3 convolution: here the same layer serves vector and
    2D/3D feature maps, whose rank a freshly built model does not tell).

    Example:
        >>> layer = CompositionalLayer(4)
        >>> layer(torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)).shape
        torch.Size([2, 4, 3, 3])
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.project = nn.Linear(2 * channels, channels, bias=False)

    def forward(self, shared: Tensor, specific: Tensor) -> Tensor:
        """shared, specific: Tensor[B, C(, *spatial)] -> Tensor[B, C(, *spatial)]."""
        return shared + _channels_last(self.project, torch.cat([shared, specific], 1))


class ShaSpecShared(nn.Module):
    """What every modality shares: the shared network, the compositional layer and the domain
    classifier (Linear(C, M) over a modality's specific global feature, label: the modality's
    index).

    Args:
        shared: the shared encoder (``copy``) or the :class:`ChannelMLP` after stems
            (``stems``).
        channels: C, the channels of the (last) feature level.
        num_modalities: M.
        stems: whether ``shared`` follows per-modality stems.
    """

    def __init__(self, shared: nn.Module, channels: int, num_modalities: int, stems: bool) -> None:
        super().__init__()
        self.shared = shared
        self.compose = CompositionalLayer(channels)
        self.domain = nn.Linear(channels, num_modalities)
        self.channels, self.stems = channels, stems


def _levels(features: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return features if isinstance(features, tuple) else (features,)


class SharedSpecificEncoder(nn.Module):
    """One modality's encoder made ShaSpec's: its own (specific) encoder, the shared path and
    the composition; returns ``[composed; shared]`` on the channels of the last level (the
    other levels: the shared path's).

    The shared parts are held, not registered: the model registers them once (as ``shaspec``),
    so that they appear once in its state dict. Each call keeps the specific feature's global
    mean (over positions, for dense features), Tensor[B, C], in :attr:`last_specific`, for the
    domain classifier.

    Args:
        specific: the task's encoder of this modality (its ``context_key`` stays visible).
        parts: the model's :class:`ShaSpecShared`.
        stem: this modality's stem before ``parts.shared`` (``stems`` kind), or None (``copy``:
            ``parts.shared`` reads the input).
    """

    def __init__(
        self, specific: nn.Module, parts: ShaSpecShared, stem: nn.Module | None = None
    ) -> None:
        super().__init__()
        if (stem is None) == parts.stems:
            raise ValueError("a stem is needed exactly when the shared network follows stems")
        self.specific = specific
        self.stem = stem
        object.__setattr__(self, "parts", parts)  # not a submodule: registered by the model
        self.last_specific: Tensor | None = None

    @property
    def context_key(self) -> str | None:
        """The wrapped encoder's ``context_key`` (read by :func:`mce.nn.model.run_encoder`)."""
        return getattr(self.specific, "context_key", None)

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor | tuple[Tensor, ...]:
        """The wrapped encoder's call (``x``, lengths, context) -> its levels, the last one
        ``[composed; shared]`` of 2 C channels."""
        features = self.specific(x, *args, **kwargs)
        specific = _levels(features)[-1]
        if self.stem is None:
            shared = _levels(self.parts.shared(x, *args, **kwargs))
        else:
            stem = _levels(self.stem(x, *args, **kwargs))
            shared = (*stem[:-1], self.parts.shared(stem[-1]))
        channels = self.parts.channels
        if specific.dim() < 2 or specific.shape[1] != channels:
            raise ValueError(
                f"the encoder's features must be [B, {channels}, ...], got {list(specific.shape)}"
            )
        if shared[-1].shape != specific.shape:
            raise ValueError(
                f"shared features {list(shared[-1].shape)} do not match the specific ones "
                f"{list(specific.shape)}"
            )
        self.last_specific = specific.flatten(2).mean(2) if specific.dim() > 2 else specific
        composed = self.parts.compose(shared[-1], specific)
        last = torch.cat([composed, shared[-1]], 1)
        return (*shared[:-1], last) if isinstance(features, tuple) else last


class SharedSubstitution(nn.Module):
    """The reconstruction slot of a ShaSpec model: tokens [R, M, 2 C] (``[composed; shared]``
    per modality, zeros where not kept) and kept [R, M] -> the same tokens with each absent
    modality's composed half replaced by the shared half of the row's first kept modality (the
    released code's ``general_shared_ft``); the shared halves pass unchanged.

    Example:
        >>> tokens = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]]])  # C = 1
        >>> SharedSubstitution(1)(tokens, torch.tensor([[True, False, True]]))[0, 1]
        tensor([2., 0.])
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, tokens: Tensor, kept: Tensor) -> Tensor:
        channels = self.channels
        if tokens.shape[-1] != 2 * channels:
            raise ValueError(
                f"ShaSpec tokens must have 2 x {channels} features, got {tokens.shape[-1]}"
            )
        first = kept.to(torch.int64).argmax(1)  # the first kept modality of each row
        shared = tokens[torch.arange(tokens.shape[0], device=tokens.device), first, channels:]
        composed = torch.where(kept[..., None], tokens[..., :channels], shared[:, None, :])
        return torch.cat([composed, tokens[..., channels:]], -1)


class ComposedHalf(nn.Module):
    """A module (the fusion, a unimodal head) that reads the composed half of ShaSpec features:
    channels ``[:C]`` of dim 2 of tokens [R, M, 2 C, ...] (``dim=2``), or of dim 1 of a
    modality's features [B, 2 C, ...], the last of a sequence of levels (``dim=1``).

    Args:
        module: the task's fusion or head.
        channels: C.
        dim: the channel dimension of what it reads.
    """

    def __init__(self, module: nn.Module, channels: int, dim: int) -> None:
        super().__init__()
        self.module = module
        self.channels, self.dim = channels, dim
        if hasattr(module, "out_dim"):
            self.out_dim = module.out_dim

    def forward(self, x: Tensor | Sequence[Tensor]) -> Tensor:
        if isinstance(x, Tensor):
            return self.module(x.narrow(self.dim, 0, self.channels))
        return self.module([*x[:-1], x[-1].narrow(self.dim, 0, self.channels)])
