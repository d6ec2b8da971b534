"""Small AudioVisionMNIST folders in the real layout: MNIST IDX files and Free Spoken Digit
Dataset wavs (``write_avmnist_fixture``), and the two file writers."""

from __future__ import annotations

import gzip
import math
import struct
import wave
from pathlib import Path

import numpy as np
import torch


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">f4"): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.tobytes()
    with (gzip.open if compress else open)(path, "wb") as file:
        file.write(payload)


def write_wav(path, digit: int, rate: int = 8000, seconds: float = 0.3) -> None:
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.5 * np.sin(2 * math.pi * (200 + 100 * digit) * t)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((tone * 32767).astype("<i2").tobytes())


def write_avmnist_fixture(root: Path) -> Path:
    """40 random 28x28 images (4 of each digit) and 2 recordings of each digit under
    ``root/mnist`` and ``root/fsdd/recordings``; returns ``root``."""
    mnist = root / "mnist"
    mnist.mkdir(parents=True)
    labels = torch.arange(10, dtype=torch.uint8).repeat_interleave(4).numpy()
    images = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8).numpy()
    write_idx(mnist / "train-images-idx3-ubyte", images)
    write_idx(mnist / "train-labels-idx1-ubyte", labels)
    recordings = root / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for digit in range(10):
        for index in range(2):
            write_wav(recordings / f"{digit}_jackson_{index}.wav", digit)
    return root
