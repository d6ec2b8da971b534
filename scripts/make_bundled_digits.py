"""Builds src/mce/data/bundled/spoken_digits.npz: one synthetic spoken-digit clip per image of
scikit-learn's bundled handwritten digits (load_digits, 1,797 8x8 images).

Recipe (seed 0): for image i with label y, espeak-ng speaks the English word for y with a voice
drawn from VOICES, a speed in [120, 220] words per minute, a pitch in [20, 80] and a word gap;
the 22,050 Hz clip is resampled to 8 kHz, white noise is added at an SNR drawn in [-18, -6] dB, and
the clip becomes a 13 x 16 MFCC map (mce.data.audio.mfcc), stored as float16 with the recipe.

Requires Debian's espeak-ng: ``apt-get install -y espeak-ng``. Run from the repository root:
``python scripts/make_bundled_digits.py``.
"""

from __future__ import annotations

import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from mce.data.audio import mfcc, read_wav, resample

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = [
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
    "en+f2",
    "en+f4",
    "en-us+f3",
    "en+m3",
    "en+m7",
    "en-gb-x-rp+f1",
]
RATE = 8000
SEED = 0
N_MFCC, FRAMES = 13, 16
OUTPUT = Path("src/mce/data/bundled/spoken_digits.npz")


def synthesize(
    word: str, voice: str, speed: int, pitch: int, workdir: Path, index: int
) -> torch.Tensor:
    path = workdir / f"{index}.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), word],
        check=True,
        capture_output=True,
    )
    waveform, rate = read_wav(path)
    return resample(waveform, rate, RATE)


def main() -> None:
    digits = load_digits()
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(SEED)
    count = labels.shape[0]
    voices = rng.integers(0, len(VOICES), count)
    speeds = rng.integers(120, 221, count)
    pitches = rng.integers(20, 81, count)
    snr_db = rng.uniform(-18.0, -6.0, count)
    noise_seeds = rng.integers(0, 2**31, count)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(4) as pool:
        clips = list(
            pool.map(
                lambda i: synthesize(
                    WORDS[labels[i]],
                    VOICES[voices[i]],
                    int(speeds[i]),
                    int(pitches[i]),
                    Path(tmp),
                    i,
                ),
                range(count),
            )
        )
    features = []
    for i, clip in enumerate(clips):
        generator = torch.Generator().manual_seed(int(noise_seeds[i]))
        power = clip.pow(2).mean()
        noise = torch.randn(clip.shape, generator=generator) * torch.sqrt(
            power / 10 ** (snr_db[i] / 10)
        )
        features.append(mfcc(clip + noise, RATE, n_mfcc=N_MFCC, frames=FRAMES).numpy())
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUTPUT,
        mfcc=np.stack(features).astype(np.float16),
        labels=labels,
        voices=np.array(VOICES)[voices],
        speeds=speeds,
        pitches=pitches,
        snr_db=snr_db.astype(np.float32),
    )
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size / 1e6:.2f} MB, {count} clips)")


if __name__ == "__main__":
    main()
