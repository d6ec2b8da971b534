"""AudioVisionMNIST (Section 4.1): MNIST digits paired with Free Spoken Digit Dataset clips.

Expected layout under ``data_dir`` (the files as their projects distribute them):

    mnist/train-images-idx3-ubyte[.gz]   mnist/train-labels-idx1-ubyte[.gz]
    fsdd/recordings/{digit}_{speaker}_{index}.wav     (8 kHz mono PCM)

A recording at another sample rate is resampled to 8 kHz before its MFCCs are taken, so every
clip's features are those of the 8 kHz release.

Each recording is paired with a distinct MNIST training image of the same digit (seeded); the
paper uses 1,500 pairs, 70% for training.

New files, without labels (:func:`read_avmnist_files`): a folder holding one IDX image file
(a name ending ``images-idx3-ubyte[.gz]``) and/or wav recordings (any ``*.wav`` under it);
sample n pairs the n-th image with the n-th recording in path order.
"""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import torch

from mce.data.audio import mfcc, read_wav, resample
from mce.data.dataset import MultimodalData

MODALITIES = ("image", "audio")
_WAV_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")
SAMPLE_RATE = 8000  # Hz: the Free Spoken Digit Dataset's rate, at which MFCCs are taken
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _pixels(images: np.ndarray, path: Path) -> torch.Tensor:
    """uint8 images [N, 28, 28] as floats in [0, 1], [N, 1, 28, 28].

    Raises:
        ValueError: the IDX file holds another type than MNIST's unsigned bytes (naming it).
    """
    if images.dtype != np.uint8:
        raise ValueError(
            f"IDX file {path} holds {images.dtype} values; MNIST images are unsigned bytes "
            "(0-255, IDX type 0x08)"
        )
    return torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST's format), optionally gzip-compressed, as a numpy array.

    Raises:
        ValueError: naming the file when it is missing, truncated or not IDX.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"IDX file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"IDX file {path} cannot be read: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"IDX file {path} has no valid IDX magic number")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"IDX file {path} is truncated (header)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"IDX file {path} holds {len(raw) - header} data bytes, its header "
            f"announces {expected} for shape {shape}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def clip_features(path: str | Path, n_mfcc: int = 20, frames: int = 20) -> torch.Tensor:
    """MFCC map [n_mfcc, frames] of a wav file, resampled to ``SAMPLE_RATE`` first.

    Raises:
        ValueError: naming the file when it is missing, corrupt, truncated or not PCM.
    """
    waveform, rate = read_wav(path)
    return mfcc(resample(waveform, rate, SAMPLE_RATE), SAMPLE_RATE, n_mfcc=n_mfcc, frames=frames)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise ValueError(f"MNIST file {stem}[.gz] not found in {directory}")


def load_avmnist(
    data_dir: str | Path, num_pairs: int = 1500, seed: int = 0, n_mfcc: int = 20, frames: int = 20
) -> MultimodalData:
    """Paired images [N, 1, 28, 28] in [0, 1] and MFCC maps [N, 1, n_mfcc, frames]."""
    data_dir = Path(data_dir)
    image_file = _find(data_dir / "mnist", "train-images-idx3-ubyte")
    images = read_idx(image_file)
    labels = read_idx(_find(data_dir / "mnist", "train-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise ValueError(f"MNIST images {images.shape} and labels {labels.shape} do not match")
    recordings = data_dir / "fsdd" / "recordings"
    if not recordings.is_dir():
        raise ValueError(f"spoken-digit folder {recordings} does not exist")
    wavs = sorted(p for p in recordings.iterdir() if _WAV_NAME.match(p.name))
    if not wavs:
        raise ValueError(f"no {{digit}}_{{speaker}}_{{index}}.wav files in {recordings}")
    rng = np.random.default_rng(seed)
    wavs = [wavs[i] for i in rng.permutation(len(wavs))[:num_pairs]]
    pools = {d: list(rng.permutation(np.flatnonzero(labels == d))) for d in range(10)}
    image_index, features, targets = [], [], []
    for path in wavs:
        digit = int(_WAV_NAME.match(path.name).group(1))
        if not pools[digit]:
            raise ValueError(f"not enough MNIST images of digit {digit} to pair with {path.name}")
        image_index.append(pools[digit].pop())
        features.append(clip_features(path, n_mfcc=n_mfcc, frames=frames))
        targets.append(digit)
    image_tensor = _pixels(images[image_index], image_file)
    audio = torch.stack(features)[:, None]
    target = torch.tensor(targets, dtype=torch.int64)
    present = torch.full_like(target, (1 << len(MODALITIES)) - 1)
    return MultimodalData(MODALITIES, {"image": image_tensor, "audio": audio}, target, present)


def read_avmnist_files(
    folder: str | Path, n_mfcc: int = 20, frames: int = 20
) -> MultimodalData:
    """Every sample of a folder of new AudioVisionMNIST files, without labels.

    The folder holds one IDX file of 28 x 28 images (a name ending ``images-idx3-ubyte`` or
    ``images-idx3-ubyte.gz``, e.g. MNIST's own) and/or wav recordings (``*.wav`` anywhere
    under it, any sample rate). Sample n pairs the n-th image with the n-th recording in path
    order; with only one kind of file, every sample lacks the other modality.

    Returns:
        Images [N, 1, 28, 28] in [0, 1] and MFCC maps [N, 1, n_mfcc, frames] (not
        standardised), zeros where absent; ``ids``: each recording's path under the folder
        without ``.wav`` (``fsdd/recordings/3_theo_0``), or the image's index when there are no
        recordings; targets -1.

    Raises:
        ValueError: no image file nor recording, several image files, images that are not
            28 x 28, image and recording counts that differ, or a file that cannot be read
            (named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"AudioVisionMNIST folder {folder} does not exist")
    image_files = sorted(
        path
        for pattern in ("*images-idx3-ubyte", "*images-idx3-ubyte.gz")
        for path in folder.rglob(pattern)
        if path.is_file()
    )
    wavs = sorted(path for path in folder.rglob("*.wav") if path.is_file())
    if len(image_files) > 1:
        listed = ", ".join(str(path.relative_to(folder)) for path in image_files)
        raise ValueError(f"AudioVisionMNIST folder {folder} holds several image files ({listed})")
    if not image_files and not wavs:
        raise ValueError(
            f"AudioVisionMNIST folder {folder} holds no image file (*images-idx3-ubyte[.gz]) "
            "and no recording (*.wav)"
        )
    images = None
    if image_files:
        images = read_idx(image_files[0])
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(
                f"IDX file {image_files[0]} holds shape {list(images.shape)}, expected "
                "[N, 28, 28] images"
            )
        if wavs and len(images) != len(wavs):
            raise ValueError(
                f"AudioVisionMNIST folder {folder}: {image_files[0].name} holds {len(images)} "
                f"images but there are {len(wavs)} recordings; sample n pairs image n with "
                "recording n"
            )
    count = len(wavs) if wavs else len(images)  # type: ignore[arg-type]
    image_tensor = torch.zeros(count, 1, 28, 28)
    if images is not None:
        image_tensor = _pixels(images, image_files[0])
    audio = torch.zeros(count, 1, n_mfcc, frames)
    for n, path in enumerate(wavs):
        audio[n, 0] = clip_features(path, n_mfcc=n_mfcc, frames=frames)
    if wavs:
        ids = tuple(path.relative_to(folder).with_suffix("").as_posix() for path in wavs)
    else:
        ids = tuple(str(n) for n in range(count))
    present = (1 if images is not None else 0) | (2 if wavs else 0)
    return MultimodalData(
        MODALITIES,
        {"image": image_tensor, "audio": audio},
        torch.full((count,), -1, dtype=torch.int64),
        torch.full((count,), present, dtype=torch.int64),
        ids=ids,
    )
