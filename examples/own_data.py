"""Train MCE on data the package does not know: arrays in, a results table out.

The Wisconsin breast-cancer features (bundled with scikit-learn) stand in for your own data:
569 tumours, 30 features that form three groups, used here as three modalities: the mean of
each cell-nucleus measurement, its standard error and its worst value. Replace ``load`` with
your arrays and ``build_model`` with your encoders; the rest stays.

    python examples/own_data.py                                  # MCE next to the baseline
    python -m mce.train --task own_data:TASK --method mce        # the same task from the CLI
                                                                 # (run from examples/)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from torch import nn

from mce import HyperParameters, MultimodalData, MultimodalModel, Task, config_for, run
from mce.nn import ConcatFusion, ReconstructionTransformer

MODALITIES = ("mean", "error", "worst")
DIM = 32


def load(data_dir: Path | None) -> tuple[MultimodalData, MultimodalData]:
    """(train, test) splits; features standardised with the training split's statistics."""
    features, labels = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(labels))
    train_index, test_index = order[:400], order[400:]
    mean, std = features[train_index].mean(0), features[train_index].std(0)
    features = (features - mean) / std
    groups = {name: features[:, 10 * g : 10 * (g + 1)] for g, name in enumerate(MODALITIES)}

    def split(index: np.ndarray) -> MultimodalData:
        # presence=None: every modality is there; the run's missing rates mask them.
        return MultimodalData.from_arrays({k: v[index] for k, v in groups.items()}, labels[index])

    return split(train_index), split(test_index)


def build_model() -> MultimodalModel:
    """An MLP encoder per modality, the reconstruction Transformer, concatenation, a decoder."""
    fusion = ConcatFusion(len(MODALITIES), DIM)
    return MultimodalModel(
        MODALITIES,
        encoders={name: nn.Sequential(nn.Linear(10, DIM), nn.ReLU()) for name in MODALITIES},
        heads={name: nn.Linear(DIM, 2) for name in MODALITIES},
        fusion=fusion,
        decoder=nn.Sequential(nn.Linear(fusion.out_dim, DIM), nn.ReLU(), nn.Linear(DIM, 2)),
        reconstruction=ReconstructionTransformer(len(MODALITIES), DIM, heads=4, ff_dim=64),
        dim=DIM,
    )


TASK = Task(
    name="breast-cancer",
    modalities=MODALITIES,
    load=load,
    build_model=build_model,  # loss and utility default to cross-entropy and accuracy
    hparams=HyperParameters(
        epochs=15, batch_size=64, lr=1e-3, pretrain_steps=300, missing_rates=(0.2, 0.5, 0.8)
    ),
)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    scores = run(config_for(TASK, method="compare", progress=False), task=TASK, verbose=True)
    print(
        f"average accuracy: MCE {scores['mce']['average']:.2f}%, "
        f"baseline {scores['baseline']['average']:.2f}%"
    )
