"""Whole-model builders shared by more than one task."""

from __future__ import annotations

from torch import nn

from mce.model import MultimodalModel
from mce.nn.encoders import LeNet5
from mce.nn.fusion import ConcatFusion
from mce.nn.reconstruction import ReconstructionTransformer


def image_audio_classifier(
    image_size: tuple[int, int],
    audio_size: tuple[int, int],
    num_classes: int = 10,
    dim: int = 64,
) -> MultimodalModel:
    """The AudioVisionMNIST architecture (Section 4.2) over modalities ("image", "audio"):
    LeNet-5 on the image and on the MFCC map, the reconstruction Transformer, concatenation
    fusion, a two-layer FC decoder."""
    modalities = ("image", "audio")
    fusion = ConcatFusion(len(modalities), dim)
    return MultimodalModel(
        modalities,
        encoders={
            "image": LeNet5(dim, in_size=image_size),
            "audio": LeNet5(dim, in_size=audio_size),
        },
        heads={name: nn.Linear(dim, num_classes) for name in modalities},
        fusion=fusion,
        decoder=nn.Sequential(
            nn.Linear(fusion.out_dim, dim), nn.ReLU(), nn.Linear(dim, num_classes)
        ),
        reconstruction=ReconstructionTransformer(len(modalities), dim, heads=4, ff_dim=128),
        dim=dim,
    )
