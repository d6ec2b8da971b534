"""mce: Modality Capability Enhancement for multimodal learning with missing modalities.

The package face: the names most users need, re-exported from the parts, which are packages:

- :mod:`mce.science`: Shapley values, LCE factors A and B, RCE losses (MCE's own method);
- :mod:`mce.methods`: the training objectives by name (MCE and the compared methods);
- :mod:`mce.nn`: the model contract (encode once, forward over rows) and reusable modules;
- :mod:`mce.tasks`: the recipes of the data sets; :mod:`mce.data`: data, masks, readers;
- :mod:`mce.training`: the command line, a run, the epoch loop, the settings, the run folder;
- :mod:`mce.evaluation`: scores over every modality combination;
- :mod:`mce.inference`: a trained run's predictions and their attribution;
- :mod:`mce.experiment`: grids of runs, summaries, statistics, reports;
- :mod:`mce.ops`: the C++/CUDA kernels' torch face; :mod:`mce.support`: what every part uses.

The entry points are ``python -m mce.train``, ``mce.predict``, ``mce.experiment`` and
``mce.report``; ``torchrun ... -m mce.train`` on several processes. Your own data goes through
:class:`Task`, :class:`MultimodalData` and :func:`run` (see ``examples/own_data.py``).
"""

from mce.data.dataset import MultimodalData
from mce.inference import load
from mce.nn.model import MultimodalModel, UnimodalModel
from mce.ops import (
    exact_plan,
    has_cpu_kernels,
    has_cuda_kernels,
    mc_plan,
    shapley_from_rows,
    subset_gather,
)
from mce.science.lce import LCEFactors, dataset_factor, lce_factors, presence_counts
from mce.science.shapley import (
    CoalitionPlan,
    coalition_plan,
    mask_to_presence,
    plan_shapley,
    presence_to_mask,
    shapley_values,
)
from mce.support import moved as _moved
from mce.support.version import __version__
from mce.tasks.base import Task
from mce.training.config import HyperParameters, TrainConfig
from mce.training.run import config_for, run

_moved.install()  # the old top-level module paths, for one release (``mce.run`` is the function)

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
