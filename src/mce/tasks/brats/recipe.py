"""The BraTS task: its options put together with the data, model, loss, evaluation and Table 1
hyper-parameters; the missing-rate presets."""

from __future__ import annotations

import dataclasses
from itertools import permutations
from typing import Any

from mce.data.brats import MODALITIES
from mce.methods.redcore import RedCoreConfig
from mce.tasks.base import Task, inputs_transform
from mce.tasks.brats.data import load, read_new, save_prediction
from mce.tasks.brats.evaluator import BratsEvaluator
from mce.tasks.brats.model import build_model, build_unimodal
from mce.tasks.brats.options import BratsOptions
from mce.tasks.brats.segmentation import SlidingWindow, TumourCrop, dice_ce_loss, dice_utility
from mce.training.config import HyperParameters

__all__ = ["OPTIONS", "PRESETS", "TASK", "brats_task"]

OPTIONS: dict[str, int | str] = dataclasses.asdict(BratsOptions())
"""The options' defaults, by name."""

# (T1/T1c, FLAIR, T2) settings a-f -> one rate per modality of MODALITIES (t1, t1ce, flair, t2)
PRESETS: dict[str, tuple[float, ...]] = {
    name: (t1, t1, flair, t2)
    for name, (t1, flair, t2) in zip("abcdef", permutations((0.2, 0.5, 0.8)))
}


def brats_task(**options: Any) -> Task:
    """The BraTS2020 task with the given crop, network size and unimodal heads (fields of
    :class:`BratsOptions`; the rest at their defaults), which become its ``options``.

    Raises:
        ValueError: what :class:`BratsOptions` rejects.
    """
    settings = BratsOptions(**options)
    crop, base, levels = settings.crop, settings.base, settings.levels
    evaluator = BratsEvaluator(SlidingWindow(settings.roi))
    return Task(
        name="brats",
        modalities=MODALITIES,
        load=load,
        build_model=lambda: build_model(crop, base, levels, settings.head),
        build_unimodal=lambda modality: build_unimodal(crop, base, levels),
        loss=dice_ce_loss,
        utility=dice_utility,
        metric_name="Dice (mean of WT, TC, ET)",
        needs_data_dir=True,
        presets=PRESETS,
        augment=inputs_transform(TumourCrop(settings.roi)),
        inference_batch=1,
        evaluator=evaluator,
        options=dataclasses.asdict(settings),
        configure=brats_task,
        read_new=read_new,
        save_prediction=save_prediction,
        # RedCore's schedule carried over to batch 1 and the run's length
        method_options={"redcore": RedCoreConfig(schedule="released")},
        hparams=HyperParameters(
            epochs=400,  # Table 1
            batch_size=1,
            optimizer="adamw",
            lr=2e-4,
            weight_decay=1e-4,  # mmFormer
            lr_schedule="poly",
            lr_power=0.9,
            grad_clip=0.0,  # mmFormer does not clip
            pretrain_steps=4000,
            pretrain_eval_every=500,
            pretrain_patience=3,
            missing_rates=PRESETS["f"],  # (T1/T1c, FLAIR, T2) = (0.8, 0.5, 0.2), Fig. 9
        ),
    )


TASK = brats_task()
