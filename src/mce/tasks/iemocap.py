"""IEMOCAP (Section 4.1, Table 1): acoustic, lexical and visual utterance features in the
MMIN/RedCore layout; LSTM + max-pool encoders (acoustic, visual) and a TextCNN (lexical), 128
features each, the reconstruction Transformer, concatenation fusion, an FC decoder (128, 128,
dropout 0.3); 4 emotions; Adam 2e-4, batch 128, 60 epochs, step decay.

Modalities are in the paper's order (A, L, V), so the presets a-f mean what Table 5 means:
``--missing-rates a`` is (A, L, V) = (0.2, 0.5, 0.8). Ten folds (``--fold``); each has its own
validation split (``--select validation`` picks the epoch by validation macro-F1, as MMIN; the
paper's default is the last epoch).

New utterances (:func:`mce.data.iemocap.read_iemocap_files`) are normalised with the run's fold
statistics, from ``A/comparE_mean_std.h5`` of the run's data folder (else of the new folder).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mce.data.dataset import MultimodalData
from mce.data.iemocap import (
    FEATURE_FILES,
    MEAN_STD_FILE,
    MODALITIES,
    NUM_CLASSES,
    NUM_FOLDS,
    fold_statistics,
    load_iemocap,
    read_iemocap_files,
)
from mce.evaluation.metrics import macro_f1, macro_recall
from mce.nn import ConcatFusion, LSTMEncoder, ReconstructionTransformer, TextCNN
from mce.nn.model import MultimodalModel
from mce.tasks.base import Task, TrainedOn
from mce.training.config import HyperParameters

DIM = 128  # feature size of every encoder (MMIN's embedding size)
WIDTHS = {"acoustic": 130, "lexical": 1024, "visual": 342}


def load(
    data_dir: Path | None, fold: int = 1
) -> tuple[MultimodalData, MultimodalData, MultimodalData]:
    """(train, validation, test) of one fold, every modality present before masking."""
    if data_dir is None:
        raise ValueError(
            "the iemocap task needs --data-dir, the folder holding A/, L/, V/, target/"
        )
    splits = load_iemocap(data_dir, fold)
    return splits.train, splits.validation, splits.test


def read_new(folder: Path, trained_on: TrainedOn) -> MultimodalData:
    """Every utterance of a folder of new features, the acoustic ones normalised with the
    run's fold statistics (``A/comparE_mean_std.h5`` of the run's data folder, else of
    ``folder``)."""
    statistics = None
    if (folder / FEATURE_FILES["acoustic"][0]).is_file():
        places = [trained_on.data_dir, folder] if trained_on.data_dir is not None else [folder]
        found = [Path(place) / MEAN_STD_FILE for place in places]
        found = [path for path in found if path.is_file()]
        if not found:
            raise ValueError(
                "the iemocap task normalises acoustic features with the training fold's "
                f"statistics, {MEAN_STD_FILE}, found in neither "
                + " nor ".join(str(place) for place in places)
                + ": give the run's IEMOCAP folder (--data-dir)"
            )
        statistics = fold_statistics(found[0], trained_on.fold)
    return read_iemocap_files(folder, statistics)


def build_model() -> MultimodalModel:
    """The authors' IEMOCAP network (MMIN backbone), with encoders that ignore padding."""
    fusion = ConcatFusion(len(MODALITIES), DIM)
    return MultimodalModel(
        MODALITIES,
        encoders={
            "acoustic": LSTMEncoder(WIDTHS["acoustic"], DIM),
            "lexical": TextCNN(WIDTHS["lexical"], DIM),
            "visual": LSTMEncoder(WIDTHS["visual"], DIM),
        },
        heads={name: nn.Linear(DIM, NUM_CLASSES) for name in MODALITIES},
        fusion=fusion,
        decoder=nn.Sequential(
            nn.Linear(fusion.out_dim, 128),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(128, 128),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(128, NUM_CLASSES),
        ),
        reconstruction=ReconstructionTransformer(len(MODALITIES), DIM, heads=4, ff_dim=2048),
        dim=DIM,
    )


TASK = Task(
    name="iemocap",
    modalities=MODALITIES,
    load=load,
    build_model=build_model,
    metric_name="weighted accuracy",
    metrics={"uar": macro_recall, "f1": macro_f1},
    selection_metric="f1",  # MMIN selects the epoch by validation macro-F1 (--select validation)
    folds=NUM_FOLDS,
    needs_data_dir=True,
    read_new=read_new,
    hparams=HyperParameters(
        epochs=60,  # Table 1
        batch_size=128,
        optimizer="adam",
        lr=2e-4,
        lr_step=20,  # Table 1 says step decay without its period: x0.5 every 20 epochs
        lr_gamma=0.5,
        pretrain_steps=2000,
        missing_rates=(0.2, 0.5, 0.8),  # setting a: (A, L, V)
    ),
)
