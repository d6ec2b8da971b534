"""Reusable modules: the reconstruction Transformer (Eq. 15), fusions, encoders and the model
builders shared by tasks."""

from mce.nn.classifiers import image_audio_classifier, unimodal_head
from mce.nn.encoders import LeNet5, LSTMEncoder, TextCNN
from mce.nn.fusion import ConcatFusion
from mce.nn.reconstruction import ReconstructionTransformer

__all__ = [
    "ConcatFusion",
    "LSTMEncoder",
    "LeNet5",
    "ReconstructionTransformer",
    "TextCNN",
    "image_audio_classifier",
    "unimodal_head",
]
