"""mce: Modality Capability Enhancement for multimodal learning with missing modalities.

Kernel ops live in :mod:`mce.ops`; Shapley values in :mod:`mce.shapley`; LCE factors in
:mod:`mce.lce`; RCE losses in :mod:`mce.rce`; the model contract in :mod:`mce.model`; training
in :mod:`mce.run` (``python -m mce.train``, or ``torchrun ... -m mce.train`` on several
processes: :mod:`mce.distributed`); your own data through :class:`Task`,
:class:`MultimodalData` and :func:`run` (see ``examples/own_data.py``).
"""

from mce._ext import has_cpu_kernels, has_cuda_kernels
from mce._version import __version__
from mce.config import HyperParameters, TrainConfig
from mce.data.dataset import MultimodalData
from mce.inference import load
from mce.lce import LCEFactors, dataset_factor, lce_factors, presence_counts
from mce.model import MultimodalModel, UnimodalModel
from mce.ops import exact_plan, mc_plan, shapley_from_rows, subset_gather
# imported as names, so that ``mce.run`` is the function (the module stays ``from mce.run
# import ...``)
from mce.run import config_for, run
from mce.shapley import (
    CoalitionPlan,
    coalition_plan,
    mask_to_presence,
    plan_shapley,
    presence_to_mask,
    shapley_values,
)
from mce.tasks.base import Task

__all__ = [
    "__version__",
    # capabilities
    "has_cpu_kernels",
    "has_cuda_kernels",
    # kernel ops
    "exact_plan",
    "mc_plan",
    "shapley_from_rows",
    "subset_gather",
    # Shapley values (Eqs. 4-5)
    "CoalitionPlan",
    "coalition_plan",
    "plan_shapley",
    "shapley_values",
    "presence_to_mask",
    "mask_to_presence",
    # LCE (Eqs. 3, 8)
    "LCEFactors",
    "dataset_factor",
    "lce_factors",
    "presence_counts",
    # model
    "MultimodalModel",
    "UnimodalModel",
    # training on built-in or your own data
    "Task",
    "MultimodalData",
    "HyperParameters",
    "TrainConfig",
    "config_for",
    "run",
    # inference on a trained run
    "load",
]
