"""Reading PCM wav files and MFCC features, in torch (no audio library needed)."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["mfcc", "read_wav", "resample"]


def read_wav(path: str | Path) -> tuple[Tensor, int]:
    """Mono float32 waveform in [-1, 1] and its sample rate, from an 8/16/32-bit PCM wav file.

    Raises:
        ValueError: naming the file when it is missing, corrupt, truncated or not PCM.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as handle:
            channels, width, rate = (
                handle.getnchannels(),
                handle.getsampwidth(),
                handle.getframerate(),
            )
            announced = handle.getnframes()
            frames = handle.readframes(announced)
    except FileNotFoundError as error:
        raise ValueError(f"audio file {path} does not exist") from error
    except (wave.Error, EOFError) as error:
        raise ValueError(f"audio file {path} is not a readable PCM wav file: {error}") from error
    if len(frames) < announced * channels * width:
        held = len(frames) // (channels * width)
        raise ValueError(
            f"audio file {path} is truncated: its header announces {announced} frames, "
            f"it holds {held}"
        )
    dtypes = {1: np.uint8, 2: np.int16, 4: np.int32}
    if width not in dtypes:
        raise ValueError(
            f"audio file {path} has {8 * width}-bit samples; 8, 16 or 32-bit PCM expected"
        )
    samples = np.frombuffer(frames, dtype=dtypes[width]).astype(np.float32)
    if width == 1:
        samples = samples - 128.0
    samples /= float(2 ** (8 * width - 1))
    if samples.size == 0:
        raise ValueError(f"audio file {path} holds no samples")
    waveform = torch.from_numpy(samples.reshape(-1, channels).mean(axis=1))
    return waveform, rate


def resample(waveform: Tensor, rate: int, target_rate: int) -> Tensor:
    """Band-limited resampling by linear-phase windowed-sinc interpolation."""
    if rate == target_rate:
        return waveform
    g = math.gcd(rate, target_rate)
    up, down = target_rate // g, rate // g
    length = math.ceil(waveform.shape[0] * up / down)
    times = torch.arange(length, dtype=torch.float64) * down / up  # in input samples
    cutoff = min(1.0, up / down)
    half_width = 16
    offsets = torch.arange(-half_width, half_width + 1, dtype=torch.float64)
    taps = torch.floor(times)[:, None] + offsets[None, :]  # (T_out, taps)
    distance = times[:, None] - taps
    window = 0.5 + 0.5 * torch.cos(math.pi * distance / (half_width + 1))
    kernel = cutoff * torch.sinc(cutoff * distance) * window
    valid = (taps >= 0) & (taps < waveform.shape[0])
    gathered = waveform.double()[taps.clamp(0, waveform.shape[0] - 1).long()] * valid
    return (gathered * kernel).sum(1).float()


def _mel_filterbank(n_fft: int, rate: int, n_mels: int) -> Tensor:
    def hz_to_mel(hz: Tensor) -> Tensor:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)

    def mel_to_hz(mel: Tensor) -> Tensor:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    bins = torch.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(torch.linspace(0.0, float(hz_to_mel(torch.tensor(rate / 2))), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (center - lower)
    falling = (upper - bins[None, :]) / (upper - center)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)  # (n_mels, n_fft // 2 + 1)


def _dct_matrix(n_mfcc: int, n_mels: int) -> Tensor:
    """Orthonormal DCT-II, [n_mfcc, n_mels]."""
    k = torch.arange(n_mfcc, dtype=torch.float64)[:, None]
    n = torch.arange(n_mels, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi / n_mels * (n + 0.5) * k) * math.sqrt(2.0 / n_mels)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


def mfcc(
    waveform: Tensor,
    rate: int,
    n_mfcc: int = 20,
    n_mels: int = 40,
    frames: int = 20,
    window_ms: float = 32.0,
) -> Tensor:
    """MFCC map [n_mfcc, frames]: the clip's frames spread evenly over its length.

    Hann-windowed STFT with ``frames`` hops covering the clip, HTK mel filterbank, log energy,
    orthonormal DCT-II.
    """
    n_fft = 1 << max(6, round(math.log2(rate * window_ms / 1000.0)))
    hop = max(1, math.ceil(waveform.shape[0] / frames))
    padded = torch.nn.functional.pad(waveform, (0, max(0, hop * frames - waveform.shape[0])))
    spectrum = (
        torch.stft(
            padded,
            n_fft,
            hop_length=hop,
            window=torch.hann_window(n_fft),
            center=True,
            return_complex=True,
        )
        .abs()
        .pow(2)[:, :frames]
    )
    mel = _mel_filterbank(n_fft, rate, n_mels) @ spectrum
    return _dct_matrix(n_mfcc, n_mels) @ torch.log(mel + 1e-6)
