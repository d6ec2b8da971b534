"""Training objectives. Each turns a batch into a loss and per-step logs (see base.py).

A method receives a :class:`MethodInputs` (per-sample loss and utility callables, presence
counts, dataset size, seed, optional unimodal upper-bound table), never a task, and is found by
name: ``get_method(name).build(inputs, options)``. New methods register a :class:`MethodSpec`
with :func:`register_method`; the trainer needs no change (a method that trains its own
variant of the task's model gives ``MethodSpec.adapt_model``, as RedCore does), and its options
dataclass gives its command-line flags, settings and ``config.json`` entry
(``MethodSpec.options``). A method registered by the module of ``--task
package.module:ATTRIBUTE`` is found the same way. The authors' code's formulas for comparison
studies live in :mod:`mce.methods.official`.

Methods work for every task and are called by the trainer: they may import MCE's science, the
model, the data and the floor, never tasks, training or the kernel ops
(MCE's science wraps them).
"""

from mce.methods.base import (
    EpochMethod,
    EpochPlan,
    LossFn,
    MethodInputs,
    MethodSpec,
    StatefulMethod,
    StepResult,
    TrainingMethod,
    UtilityFn,
    epoch_batches,
)
from mce.methods.baseline import SPEC as BASELINE_SPEC
from mce.methods.baseline import BaselineMethod
from mce.methods.mbt_sample import SPEC as MBT_SAMPLE_SPEC
from mce.methods.mbt_sample import MBTSampleConfig, MBTSampleMethod
from mce.methods.mce import SPEC as MCE_SPEC
from mce.methods.mce import MCEConfig, MCEMethod
from mce.methods.passion import SPEC as PASSION_SPEC
from mce.methods.passion import PASSIONConfig, PASSIONMethod
from mce.methods.pmr import SPEC as PMR_SPEC
from mce.methods.pmr import PMRConfig, PMRMethod
from mce.methods.redcore import SPEC as REDCORE_SPEC
from mce.methods.redcore import RedCoreConfig, RedCoreMethod
from mce.methods.registry import METHODS, get_method, register_method
from mce.methods.shaspec import SPEC as SHASPEC_SPEC
from mce.methods.shaspec import ShaSpecConfig, ShaSpecMethod

register_method(MCE_SPEC)
register_method(BASELINE_SPEC)
register_method(REDCORE_SPEC)
register_method(MBT_SAMPLE_SPEC)
register_method(PMR_SPEC)
register_method(PASSION_SPEC)
register_method(SHASPEC_SPEC)

__all__ = [
    # contract
    "LossFn",
    "UtilityFn",
    "MethodInputs",
    "StepResult",
    "TrainingMethod",
    "StatefulMethod",
    "EpochPlan",
    "EpochMethod",
    "epoch_batches",
    "MethodSpec",
    # registry
    "METHODS",
    "register_method",
    "get_method",
    # methods
    "BaselineMethod",
    "MCEConfig",
    "MCEMethod",
    "RedCoreConfig",
    "RedCoreMethod",
    "ShaSpecConfig",
    "ShaSpecMethod",
    "PASSIONConfig",
    "PASSIONMethod",
    "PMRConfig",
    "PMRMethod",
    "MBTSampleConfig",
    "MBTSampleMethod",
]
