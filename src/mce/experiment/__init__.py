"""`python -m mce.experiment`: variants x missing-rate settings x seeds of one task, one table.

Each cell (variant, setting, seed) is an ordinary run folder written by :func:`mce.training.run.run`
under ``OUT/cells/<variant>/<setting>/seed<k>/``; a cell whose ``results.json`` exists is
finished and never recomputed, and a cell interrupted mid-training resumes from its checkpoint.
The summary (``summary.json``, ``summary.md``, ``summary.csv``, ``cells.csv``) gives, per setting
and per modality combination and their average, each variant's mean +- std with a Student-t 95%
confidence interval over seeds, and the paired difference of each variant minus the reference
(``baseline``) over the same seeds, with its interval and the paired t-test p-value.
The task's extra metrics (``results.json["metrics"]``, e.g. ``uar``, ``f1``) are summarised
the same way, one table each after a setting's main one.

A *variant* is a named training recipe: a registered method (``mce`` or ``baseline``) with MCE
switches (:class:`mce.methods.mce.MCEConfig` ``use_*``). ``--ablation table2`` names the rows
a-m of the paper's Table 2.

The package re-exports its public API here; import from ``mce.experiment``, not the modules:

- :mod:`mce.experiment.grid`: what an experiment is (:data:`VARIANTS`, :data:`ABLATIONS`,
  :class:`Variant`, :func:`variant`, :class:`ExperimentSpec`, :class:`Cell`, :func:`cells_of`).
- :mod:`mce.experiment.summary`: what it reports (:func:`summarize_experiment`,
  :func:`upper_bound_scores`, :func:`write_summary`; the file names :data:`RESULTS` of a cell
  and :data:`SUMMARY` of the experiment, read by :mod:`mce.report`).
- :mod:`mce.experiment.runner`: :func:`run_experiment`.
- :mod:`mce.experiment.protocols`: the paper's experiments (``--protocol``: :data:`PROTOCOLS`,
  :func:`get_protocol`, :func:`resolve_protocol`).
- :mod:`mce.experiment.stats`: means, Student-t intervals and paired differences over seeds
  (import it as a module: its names are not re-exported).
- :mod:`mce.experiment.published`: the paper's printed values and claims
  (:func:`published_table`); :mod:`mce.experiment.paper_check` puts them beside a summary
  with a verdict per claim; :mod:`mce.experiment.costs`: Table 8's step costs measured.
- :mod:`mce.experiment.cli`: the command line (:func:`parse_spec`, :func:`main`), run by
  ``__main__``.

Example:
    python -m mce.experiment --task digits --seeds 0-4 --settings 0.8,0.2 0.5,0.5
    python -m mce.experiment --ablation table2 --seeds 0-9 --out runs/table2
    python -m mce.experiment --protocol fig7 --task digits

Experiments sit at the top: they may import training, tasks, methods, data and the floor;
nothing but :mod:`mce.report` imports them.
"""

from __future__ import annotations

from mce.experiment.cli import build_parser, main, parse_seeds, parse_spec
from mce.experiment.grid import (
    ABLATIONS,
    REFERENCE,
    RESULTS,
    SWITCH_LABELS,
    SWITCHES,
    VARIANTS,
    Cell,
    ExperimentSpec,
    Variant,
    cells_of,
    settable_names,
    setting_name,
    variant,
)
from mce.experiment.protocols import PROTOCOLS, Protocol, get_protocol, resolve_protocol
from mce.experiment.published import published_table
from mce.experiment.runner import EXPERIMENT, run_experiment
from mce.experiment.summary import (
    CSV_FIELDS,
    SUMMARY,
    csv_rows,
    markdown,
    summarize_experiment,
    upper_bound_scores,
    write_summary,
)

__all__ = [
    "ABLATIONS",
    "CSV_FIELDS",
    "EXPERIMENT",
    "PROTOCOLS",
    "REFERENCE",
    "RESULTS",
    "SUMMARY",
    "SWITCHES",
    "SWITCH_LABELS",
    "VARIANTS",
    "Cell",
    "ExperimentSpec",
    "Protocol",
    "Variant",
    "build_parser",
    "cells_of",
    "csv_rows",
    "get_protocol",
    "main",
    "markdown",
    "parse_seeds",
    "parse_spec",
    "published_table",
    "resolve_protocol",
    "run_experiment",
    "setting_name",
    "settable_names",
    "variant",
    "summarize_experiment",
    "upper_bound_scores",
    "write_summary",
]
