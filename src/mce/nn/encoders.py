"""Per-modality encoders: raw input of one modality -> a feature vector of size `dim`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


class LSTMEncoder(nn.Module):
    """LSTM over a sequence [B, T, in_features], max-pooled over time (IEMOCAP acoustic/visual)."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_features, dim, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(x)  # (B, T, dim)
        return out.max(dim=1).values


class TextCNN(nn.Module):
    """1-D convolutions of widths 3, 4, 5 over token embeddings, max-pooled (IEMOCAP lexical)."""

    def __init__(self, in_features: int, dim: int, channels: int = 128) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_features, channels, k) for k in (3, 4, 5))
        self.proj = nn.Linear(3 * channels, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x.transpose(1, 2)  # (B, in_features, T)
        pooled = [F.relu(conv(x)).max(dim=2).values for conv in self.convs]
        return F.relu(self.proj(torch.cat(pooled, dim=1)))
