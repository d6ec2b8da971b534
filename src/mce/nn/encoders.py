"""Per-modality encoders: raw input of one modality -> a feature vector of size `dim`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class LeNet5(nn.Module):
    """LeNet-5 for single-channel maps; inputs smaller than 28x28 are zero-padded to 28x28."""

    def __init__(self, dim: int, in_size: tuple[int, int] = (28, 28)) -> None:
        super().__init__()
        height, width = in_size
        top, left = max(0, 28 - height) // 2, max(0, 28 - width) // 2
        self.padding = (left, max(0, 28 - width) - left, top, max(0, 28 - height) - top)
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, dim), nn.ReLU()
        )

    def forward(self, images: Tensor) -> Tensor:
        """images: Tensor[B, 1, H, W] -> Tensor[B, dim]."""
        return self.head(self.features(F.pad(images, self.padding)))


def _check_lengths(lengths: Tensor, x: Tensor) -> None:
    if lengths.shape != (x.shape[0],):
        raise ValueError(f"lengths must have shape [{x.shape[0]}], got {list(lengths.shape)}")
    if bool(((lengths < 1) | (lengths > x.shape[1])).any()):
        raise ValueError(
            f"lengths must lie in [1, {x.shape[1]}] (the padded length), got "
            f"{lengths.min().item()}..{lengths.max().item()}"
        )


def _valid_steps(lengths: Tensor, num_steps: int) -> Tensor:
    """Bool [B, T]: step t of sequence b is valid (t < lengths[b])."""
    return torch.arange(num_steps, device=lengths.device) < lengths[:, None]


class LSTMEncoder(nn.Module):
    """LSTM over a sequence [B, T, in_features], max-pooled over time (IEMOCAP acoustic/visual).

    Given ``lengths``, the padded batch is packed, so each sequence runs through the LSTM alone
    at its own length, and the max-pool covers its valid steps only: frames past a length never
    change the output.

    Args:
        in_features: size of each frame.
        dim: hidden size of the LSTM, and so of the output.
    """

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_features, dim, batch_first=True)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x: Tensor[B, T, in_features], lengths: Tensor[B] int64 in [1, T] (None: all T
        frames valid) -> Tensor[B, dim]."""
        if lengths is None:
            out, _ = self.lstm(x)  # (B, T, dim)
            return out.max(dim=1).values
        _check_lengths(lengths, x)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True)  # (B, max(lengths), dim)
        valid = _valid_steps(lengths.to(out.device), out.shape[1])
        return out.masked_fill(~valid[..., None], float("-inf")).max(dim=1).values


class TextCNN(nn.Module):
    """1-D convolutions of widths 3, 4, 5 over token embeddings, max-pooled (IEMOCAP lexical).

    Each width k is max-pooled over the positions p whose window lies inside the sequence
    (p + k <= length). A sequence shorter than k is zero-padded on the right to k tokens (one
    window, over all its tokens and zeros). Frames past a length are zeroed first, so they never
    change the output: a padded batch gives each sequence's output on its own.

    Args:
        in_features: size of each token embedding.
        dim: output size.
        channels: filters per width.
    """

    kernel_sizes = (3, 4, 5)

    def __init__(self, in_features: int, dim: int, channels: int = 128) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_features, channels, k) for k in self.kernel_sizes)
        self.proj = nn.Linear(3 * channels, dim)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x: Tensor[B, T, in_features], lengths: Tensor[B] int64 in [1, T] (None: all T
        tokens valid) -> Tensor[B, dim]."""
        num_tokens = x.shape[1]
        if lengths is None:
            lengths = torch.full((x.shape[0],), num_tokens, dtype=torch.int64, device=x.device)
        else:
            _check_lengths(lengths, x)
            lengths = lengths.to(x.device)
            x = x.masked_fill(~_valid_steps(lengths, num_tokens)[..., None], 0.0)
        widest = max(self.kernel_sizes)
        x = F.pad(x.transpose(1, 2), (0, max(widest - num_tokens, 0)))  # (B, in_features, T')
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs):
            out = F.relu(conv(x))  # (B, channels, T' - k + 1)
            valid = _valid_steps(lengths.clamp(min=k) - k + 1, out.shape[2])
            pooled.append(out.masked_fill(~valid[:, None, :], float("-inf")).max(dim=2).values)
        return F.relu(self.proj(torch.cat(pooled, dim=1)))
