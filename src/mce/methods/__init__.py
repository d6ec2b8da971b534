"""Training objectives. Each turns a batch into a loss and per-step logs (see base.py)."""

from mce.methods.base import StepResult, TrainingMethod
from mce.methods.baseline import BaselineMethod
from mce.methods.mce import MCEConfig, MCEMethod

__all__ = ["StepResult", "TrainingMethod", "BaselineMethod", "MCEConfig", "MCEMethod"]
