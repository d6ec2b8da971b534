"""One training step of MCE (exact, and Monte Carlo K = 100) and RedCore vs the plain baseline.

The iemocap task's own model (src/mce/tasks/iemocap.py: LSTM + max-pool encoders for acoustic
(130-dim) and visual (342-dim), a TextCNN for lexical (1024-dim), 128 features, the
reconstruction Transformer with feed-forward 2048, concatenation fusion, a 128-128 FC decoder,
4 classes) on a batch of 128 padded utterances whose lengths are drawn like IEMOCAP's (log-normal,
median 40 acoustic frames, 30 visual frames, 15 lexical tokens, capped at 150 / 100 / 40);
missing rates (A, L, V) = (0.2, 0.5, 0.8). Same model, same batch for every method: forward,
backward and an Adam update.
"""

from __future__ import annotations

import pytest
import torch
from conftest import CUDA_PRESENT, NO_CUDA

from mce.data.dataset import Batch
from mce.experiment import costs
from mce.experiment.costs import LENGTHS, MODALITIES, draw_lengths  # noqa: F401 - bench scripts
from mce.methods import BaselineMethod, MCEConfig, MCEMethod, MethodInputs, TrainingMethod
from mce.methods.redcore import RedCoreMethod, adapt_model
from mce.nn.model import MultimodalModel
from mce.science.lce import presence_counts
from mce.tasks import classification_loss, classification_utility
from mce.tasks.iemocap import build_model as _build_iemocap_model

CLASSES, BATCH = costs.CLASSES, 128


def build_model(method: str = "baseline") -> MultimodalModel:
    """The iemocap model; RedCore's adapted (variational encoders, imagination networks)."""
    model = _build_iemocap_model()
    return adapt_model(model, None) if method == "redcore" else model


def _batch(device: str) -> tuple[Batch, torch.Tensor]:
    return costs.iemocap_like_batch(BATCH, seed=0, device=device)


def make_method(name: str, batch: Batch, upper: torch.Tensor) -> TrainingMethod:
    """baseline, redcore, or MCE with exact / Monte Carlo (K = 100) Shapley values
    (lambda_sub = 2)."""
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
    if name == "redcore":
        return RedCoreMethod(inputs)
    return MCEMethod(inputs, MCEConfig(shapley=name, mc_k=100, lambda_sub=2.0))


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA_PRESENT, reason=NO_CUDA))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method_name", ["baseline", "mce-exact", "mce-mc100", "redcore"])
def test_training_step(run, device, method_name):
    torch.manual_seed(0)
    model = build_model(method_name).to(device)
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
