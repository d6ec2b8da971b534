"""The model: the contract every task's network follows (:mod:`~mce.nn.model`: encode each
present modality once, forward over plan rows; :mod:`~mce.nn.dense` for multi-scale dense
outputs) and the reusable modules: the reconstruction Transformer (Eq. 15), fusions, encoders,
the 3D U-Net, the BEV network and the model builders shared by tasks.

A model takes tensors and knows neither the data sets nor how it is trained: it may import the
kernel ops (:mod:`mce.ops`) and the floor (:mod:`mce.support`), never data, methods or tasks.
"""

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
