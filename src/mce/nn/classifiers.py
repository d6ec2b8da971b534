"""Whole-model builders shared by more than one task."""

from __future__ import annotations

from torch import nn

from mce.nn.encoders import LeNet5
from mce.nn.fusion import ConcatFusion
from mce.nn.model import MultimodalModel
from mce.nn.reconstruction import ReconstructionTransformer


def unimodal_head(dim: int, num_classes: int) -> nn.Module:
    """A unimodal head (L_single, Eq. 9, and the upper-bound model's read-out): LayerNorm, then
    a linear layer.

    Encoders trained through the fusion give small features (|h| of 0.02-0.04 on the bundled
    digits, after a ReLU), which a bare linear head, trained only where B_m > 0, barely learned
    to read (23-37% test accuracy); normalised, the head reaches its upper bound's accuracy.
    """
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))


def image_audio_classifier(
    image_size: tuple[int, int],
    audio_size: tuple[int, int],
    num_classes: int = 10,
    dim: int = 64,
) -> MultimodalModel:
    """The AudioVisionMNIST architecture (Section 4.2) over modalities ("image", "audio"):
    LeNet-5 on the image and on the MFCC map, the reconstruction Transformer, concatenation
    fusion, a two-layer FC decoder, and :func:`unimodal_head` per modality."""
    modalities = ("image", "audio")
    fusion = ConcatFusion(len(modalities), dim)
    return MultimodalModel(
        modalities,
        encoders={
            "image": LeNet5(dim, in_size=image_size),
            "audio": LeNet5(dim, in_size=audio_size),
        },
        heads={name: unimodal_head(dim, num_classes) for name in modalities},
        fusion=fusion,
        decoder=nn.Sequential(
            nn.Linear(fusion.out_dim, dim), nn.ReLU(), nn.Linear(dim, num_classes)
        ),
        reconstruction=ReconstructionTransformer(len(modalities), dim, heads=4, ff_dim=128),
        dim=dim,
    )
