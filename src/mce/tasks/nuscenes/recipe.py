"""The nuScenes task: its options put together with the data, model, loss, evaluation and
Table 1 hyper-parameters."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

from mce.data.nuscenes import MODALITIES
from mce.methods.mbt_sample import MBTSampleConfig
from mce.methods.redcore import RedCoreConfig
from mce.tasks.base import Task
from mce.tasks.nuscenes.augmentation import RandomReferenceCamera
from mce.tasks.nuscenes.data import load_splits, read_new, save_prediction
from mce.tasks.nuscenes.evaluator import BevEvaluator
from mce.tasks.nuscenes.loss import bev_loss, iou_utility
from mce.tasks.nuscenes.model import bev_grid, build_model, build_unimodal
from mce.tasks.nuscenes.options import RUNTIME, NuScenesOptions
from mce.training.config import HyperParameters

__all__ = ["OPTIONS", "TASK", "nuscenes_task"]

OPTIONS: dict[str, int | str] = dataclasses.asdict(NuScenesOptions())
"""The options' defaults, by name."""


def nuscenes_task(**options: Any) -> Task:
    """The nuScenes task with the given resolution and sensor settings (fields of
    :class:`NuScenesOptions`; the rest at their defaults), which become its ``options``.

    Raises:
        ValueError: what :class:`NuScenesOptions` rejects.
    """
    settings = NuScenesOptions(**options)
    grid = bev_grid(settings)
    return Task(
        name="nuscenes",
        modalities=MODALITIES,
        load=partial(load_splits, settings, grid),
        build_model=partial(build_model, settings),
        build_unimodal=partial(build_unimodal, settings),
        loss=bev_loss,
        utility=iou_utility,
        metric_name="IoU (vehicle, dataset-level)",
        needs_data_dir=True,
        inference_batch=1,
        evaluator=BevEvaluator(),
        augment=RandomReferenceCamera(grid) if settings.reference == "random" else None,
        options=dataclasses.asdict(settings),
        configure=nuscenes_task,
        runtime_options=RUNTIME,
        read_new=partial(read_new, settings, grid),
        save_prediction=save_prediction,
        # RedCore's schedule carried over to batch 1 and the run's length; MBT-Sample's warm-up
        # cut to the first of the two epochs (the released 5 of 60 would never end)
        method_options={
            "redcore": RedCoreConfig(schedule="released"),
            "mbt-sample": MBTSampleConfig(warmup=1),
        },
        hparams=HyperParameters(
            epochs=2,  # Table 1's 50k iterations at batch 1: 2 x 28,130 = 56,260 steps
            batch_size=1,
            optimizer="adamw",
            lr=3e-4,
            lr_schedule="onecycle",
            weight_decay=1e-7,  # Simple-BEV
            grad_clip=5.0,  # Simple-BEV
            pretrain_steps=2000,
            pretrain_eval_every=250,
            pretrain_patience=3,
            missing_rates=(0.2, 0.5, 0.8),  # setting a: (C, L, R)
        ),
    )


TASK = nuscenes_task()
