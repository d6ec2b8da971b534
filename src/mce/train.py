"""`python -m mce.train`: train MCE (and/or the plain baseline, or RedCore) and evaluate every
modality combination. With no arguments: the bundled digits task on the CPU, MCE next to the
baseline.

The command line is :mod:`mce.training.cli`, the run :mod:`mce.training.run`; this module is the
entry point and keeps their names importable from ``mce.train``.
"""

from __future__ import annotations

import sys

from mce.training.cli import Command, build_parser, main, parse_command, parse_config
from mce.training.config import HyperParameters, TrainConfig
from mce.training.run import UsageError, config_for, resolve_config, run

__all__ = [
    "TrainConfig",
    "HyperParameters",
    "UsageError",
    "run",
    "config_for",
    "resolve_config",
    "main",
    "build_parser",
    "parse_config",
    "parse_command",
    "Command",
]

if __name__ == "__main__":
    sys.exit(main())
