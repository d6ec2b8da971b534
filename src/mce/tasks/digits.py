"""The bundled default: handwritten digits (image) + synthetic spoken digits (audio)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mce.data.bundled import MODALITIES, load_bundled_digits
from mce.data.dataset import MultimodalData
from mce.model import MultimodalModel
from mce.nn import ConcatFusion, LeNet5, ReconstructionTransformer
from mce.tasks.base import Task

DIM = 64
SPLIT_SEED = 0
TRAIN_FRACTION = 0.7  # as AudioVisionMNIST (Section 4.1)


def load(data_dir: Path | None) -> tuple[MultimodalData, MultimodalData]:
    return load_bundled_digits().random_split(TRAIN_FRACTION, SPLIT_SEED)


def image_audio_classifier(
    image_size: tuple[int, int], audio_size: tuple[int, int], dim: int = DIM
) -> MultimodalModel:
    """The AudioVisionMNIST architecture (Section 4.2): LeNet-5 on the image and on the MFCC
    map, the reconstruction Transformer, concatenation fusion, a two-layer FC decoder."""
    fusion = ConcatFusion(len(MODALITIES), dim)
    return MultimodalModel(
        MODALITIES,
        encoders={
            "image": LeNet5(dim, in_size=image_size),
            "audio": LeNet5(dim, in_size=audio_size),
        },
        heads={name: nn.Linear(dim, 10) for name in MODALITIES},
        fusion=fusion,
        decoder=nn.Sequential(nn.Linear(fusion.out_dim, dim), nn.ReLU(), nn.Linear(dim, 10)),
        reconstruction=ReconstructionTransformer(len(MODALITIES), dim, heads=4, ff_dim=128),
        dim=dim,
    )


def build_model() -> MultimodalModel:
    return image_audio_classifier((8, 8), (13, 16))


TASK = Task(
    name="digits",
    modalities=MODALITIES,
    load=load,
    build_model=build_model,
    defaults={
        "epochs": 30,
        "batch_size": 128,
        "lr": 1e-3,
        "missing_rates": "0.8,0.2",
        "pretrain_epochs": 15,
        "lr_step": 20,
        "lr_gamma": 0.1,
    },
)
