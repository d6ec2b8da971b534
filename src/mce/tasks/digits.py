"""The bundled default: handwritten digits (image) + synthetic spoken digits (audio)."""

from __future__ import annotations

from pathlib import Path

from mce.data.bundled import MODALITIES, load_bundled_digits
from mce.data.dataset import MultimodalData, standardize
from mce.nn import image_audio_classifier
from mce.nn.model import MultimodalModel
from mce.tasks.base import Task
from mce.training.config import HyperParameters

SPLIT_SEED = 0
TRAIN_FRACTION = 0.7  # as AudioVisionMNIST (Section 4.1)


def load(data_dir: Path | None) -> tuple[MultimodalData, MultimodalData]:
    train, test = load_bundled_digits().random_split(TRAIN_FRACTION, SPLIT_SEED)
    return standardize(train, test, "audio", dims=(0,))  # per MFCC coefficient and frame


def build_model() -> MultimodalModel:
    """8x8 images, 13 MFCCs x 16 frames of audio."""
    return image_audio_classifier((8, 8), (13, 16))


TASK = Task(
    name="digits",
    modalities=MODALITIES,
    load=load,
    build_model=build_model,
    hparams=HyperParameters(
        epochs=30,  # 1,257 training samples: 10 steps per epoch, 300 steps in all
        batch_size=128,
        lr=1e-3,
        lr_step=20,  # decay by 10 for the last third
        lr_gamma=0.1,
        pretrain_steps=600,  # early stopping on a held-out fifth usually ends far sooner
        # image (the strong modality) missing in half the samples, audio in a fifth: imbalanced,
        # and 30% of the samples keep both, so L_aux, L_sub and the Shapley interactions act
        # (at rates summing to 1 or more no sample keeps two modalities: see docs/running.md)
        missing_rates=(0.5, 0.2),
    ),
)
