"""The bundled default data set: handwritten digits paired with spoken digits.

Images: scikit-learn's bundled real handwritten digits (``load_digits``: 1,797 8x8 images
from 43 writers, 16 grey levels). Audio: for each image, a spoken clip of its label synthesised
with espeak-ng (varied voices, speeds and pitches, strong white noise), as a 13 x 16 MFCC map;
recipe and seed in ``scripts/make_bundled_digits.py``.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from mce.data.dataset import MultimodalData

MODALITIES = ("image", "audio")


def load_bundled_digits() -> MultimodalData:
    """All 1,797 pairs, every modality present; images scaled to [0, 1] as [N, 1, 8, 8],
    audio MFCC maps as stored, [N, 1, 13, 16] (the task standardises them with its training
    split's statistics)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = resources.files("mce.data") / "bundled" / "spoken_digits.npz"
    try:
        with resources.as_file(path) as file, np.load(file) as archive:
            mfcc, labels = archive["mfcc"].astype(np.float32), archive["labels"]
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(
            f"the bundled audio file {path} is missing or corrupt; reinstall mce"
        ) from error
    if labels.shape[0] != digits.target.shape[0] or not np.array_equal(labels, digits.target):
        raise ValueError(f"the bundled audio file {path} does not match scikit-learn's digits")
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    inputs = {"image": images, "audio": torch.from_numpy(mfcc)[:, None]}
    target = torch.from_numpy(digits.target.astype(np.int64))
    present = torch.full_like(target, (1 << len(MODALITIES)) - 1)
    return MultimodalData(MODALITIES, inputs, target, present)
