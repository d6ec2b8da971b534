"""AudioVisionMNIST (Section 4.2, Table 1): LeNet-5 on 28x28 images, MFCC audio, concatenation
fusion, two-layer FC decoder; Adam, lr 1e-3, batch 128, 2.5k iterations, step decay.

New files (:func:`mce.data.avmnist.read_avmnist_files`) are standardised with the training
split's audio statistics, read from the run's data folder."""

from __future__ import annotations

from pathlib import Path

from mce.data.avmnist import MODALITIES, load_avmnist, read_avmnist_files
from mce.data.dataset import MultimodalData, standardize
from mce.nn import image_audio_classifier
from mce.nn.model import MultimodalModel
from mce.support.bits import has_modality
from mce.tasks.base import Task, TrainedOn
from mce.training.config import HyperParameters

N_MFCC, FRAMES = 20, 20
TRAIN_FRACTION = 0.7


def _split(data_dir: Path) -> tuple[MultimodalData, MultimodalData]:
    """The data set's (train, test) split, before standardisation."""
    data = load_avmnist(data_dir, n_mfcc=N_MFCC, frames=FRAMES)
    return data.random_split(TRAIN_FRACTION, seed=0)


def load(data_dir: Path | None) -> tuple[MultimodalData, MultimodalData]:
    if data_dir is None:
        raise ValueError("the avmnist task needs --data-dir")
    train, test = _split(data_dir)
    return standardize(train, test, "audio", dims=(0, 3))  # per MFCC coefficient


def read_new(folder: Path, trained_on: TrainedOn) -> MultimodalData:
    """Every sample of a folder of new files, the audio standardised as the run's test split
    (with the statistics of the training split of ``trained_on.data_dir``)."""
    new = read_avmnist_files(folder, n_mfcc=N_MFCC, frames=FRAMES)
    if not has_modality(new.present, MODALITIES.index("audio")).any():  # no statistics needed
        return new
    why = "the avmnist task standardises new audio with its training split's statistics"
    if trained_on.data_dir is None:
        raise ValueError(f"{why}: give the run's AudioVisionMNIST folder (--data-dir)")
    try:
        train = _split(trained_on.data_dir)[0]
    except ValueError as error:
        raise ValueError(f"{why}, read from the run's data folder: {error}") from error
    return standardize(train, new, "audio", dims=(0, 3))[1]


def build_model() -> MultimodalModel:
    return image_audio_classifier((28, 28), (N_MFCC, FRAMES))


TASK = Task(
    name="avmnist",
    modalities=MODALITIES,
    load=load,
    build_model=build_model,
    hparams=HyperParameters(
        epochs=280,  # 1,050 training pairs / 128 = 9 steps per epoch: 2.5k iterations (Table 1)
        batch_size=128,
        lr=1e-3,
        lr_step=200,  # step decay (Table 1)
        lr_gamma=0.1,
        pretrain_steps=3000,  # with early stopping on a held-out fifth
        missing_rates=(0.0, 0.8),  # images always present, audio mostly missing
    ),
    needs_data_dir=True,
    read_new=read_new,
)
