"""Reusable modules: the reconstruction Transformer (Eq. 15), fusions and encoders."""

from mce.nn.encoders import LeNet5, LSTMEncoder, MLPEncoder, TextCNN
from mce.nn.fusion import ConcatFusion, SumFusion
from mce.nn.reconstruction import ReconstructionTransformer

__all__ = [
    "ReconstructionTransformer",
    "ConcatFusion",
    "SumFusion",
    "LeNet5",
    "LSTMEncoder",
    "MLPEncoder",
    "TextCNN",
]
