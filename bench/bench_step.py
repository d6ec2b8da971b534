"""One training step of MCE (exact, and Monte Carlo K = 100) vs the plain baseline.

IEMOCAP-like shapes (Table 8 of the paper): batch 128; acoustic 130-dim x 50 frames and visual
342-dim x 50 frames through LSTMs, lexical 1024-dim x 22 tokens through a TextCNN, hidden 128;
the reconstruction Transformer (feed-forward 2048, as the authors' code), concatenation fusion,
a 128-128 FC decoder, 4 classes; missing rates (A, V, L) = (0.2, 0.5, 0.8). Same model, same
batch for every method: forward, backward and an Adam update.
"""

from __future__ import annotations

import pytest
import torch
from conftest import CUDA_PRESENT, NO_CUDA
from torch import nn

from mce.data.dataset import Batch
from mce.data.masks import draw_presence
from mce.lce import presence_counts
from mce.methods import BaselineMethod, MCEConfig, MCEMethod, MethodInputs, TrainingMethod
from mce.model import MultimodalModel
from mce.nn import ConcatFusion, LSTMEncoder, ReconstructionTransformer, TextCNN
from mce.tasks import classification_loss, classification_utility

MODALITIES = ("acoustic", "visual", "lexical")
SHAPES = {"acoustic": (50, 130), "visual": (50, 342), "lexical": (22, 1024)}
HIDDEN, CLASSES, BATCH = 128, 4, 128


def build_model() -> MultimodalModel:
    fusion = ConcatFusion(3, HIDDEN)
    return MultimodalModel(
        MODALITIES,
        encoders={
            "acoustic": LSTMEncoder(130, HIDDEN),
            "visual": LSTMEncoder(342, HIDDEN),
            "lexical": TextCNN(1024, HIDDEN),
        },
        heads={name: nn.Linear(HIDDEN, CLASSES) for name in MODALITIES},
        fusion=fusion,
        decoder=nn.Sequential(
            nn.Linear(fusion.out_dim, 128),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(128, 128),
            nn.ReLU(),
            nn.Linear(128, CLASSES),
        ),
        reconstruction=ReconstructionTransformer(3, HIDDEN, heads=4, ff_dim=2048),
        dim=HIDDEN,
    )


def make_method(name: str, batch: Batch, upper: torch.Tensor) -> TrainingMethod:
    """baseline, or MCE with exact / Monte Carlo (K = 100) Shapley values (lambda_sub = 2)."""
    inputs = MethodInputs(
        loss=classification_loss,
        utility=classification_utility,
        counts=presence_counts(batch.present.cpu(), 3),
        dataset_size=BATCH,
        seed=0,
        upper=upper,
    )
    if name == "baseline":
        return BaselineMethod(inputs)
    return MCEMethod(inputs, MCEConfig(shapley=name, mc_k=100, lambda_sub=2.0))


def _batch(device: str) -> tuple[Batch, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    present = draw_presence(BATCH, (0.2, 0.5, 0.8), seed=0)
    present[present == 0] = 1
    inputs = {name: torch.randn(BATCH, *SHAPES[name], generator=generator) for name in MODALITIES}
    target = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    upper = torch.stack([(present >> m) & 1 for m in range(3)], 1).float()
    return Batch(inputs, target, present, torch.arange(BATCH)).to(device), upper


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA_PRESENT, reason=NO_CUDA))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method_name", ["baseline", "mce-exact", "mce-mc100"])
def test_training_step(run, device, method_name):
    torch.manual_seed(0)
    model = build_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    batch, upper = _batch(device)
    method = make_method(method_name.removeprefix("mce-").removesuffix("100"), batch, upper)
    counter = iter(range(10**9))

    def step():
        result = method.step(model, batch, next(counter))
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()

    run(step)
