"""`python -m mce.experiment`: variants x missing-rate settings x seeds of one task, one table.

The command line of :mod:`mce.experiment` (run by its ``__main__``).

Example:
    python -m mce.experiment --task digits --seeds 0-4 --settings 0.8,0.2 0.5,0.5
    python -m mce.experiment --ablation table2 --seeds 0-9 --out runs/table2
    python -m mce.experiment --task my.module:TASK --folds 1-5 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mce.experiment.grid import ABLATIONS, VARIANTS, ExperimentSpec, cells_of, settable_names
from mce.experiment.protocols import PROTOCOLS, get_protocol, resolve_protocol
from mce.experiment.runner import run_experiment
from mce.methods import METHODS
from mce.support.checkpoint import disk_full_message, is_disk_full
from mce.tasks import Task, task_from_arguments
from mce.training.cli import (
    OneLineParser,
    available_cores,
    default_threads,
    flag_names,
    preset_hint,
)
from mce.training.config import (
    HPARAM_NAMES,
    MASK_SCHEMES,
    SCORE_ON,
    UPPER_BOUND_MODES,
    hparam_arguments,
    option_names,
    parse_option,
    parse_rates,
)
from mce.training.records import FIGURES_MARKER, package_version
from mce.training.run_folder import write_text

PROG = "python -m mce.experiment"
COST_ROUNDS = 20  # interleaved steps per recipe of --protocol table8
def parse_seeds(text: str) -> tuple[int, ...]:
    """``0,1,2``, ``0-4`` or a mix (``0-2,7``)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            if dash:
                seeds += range(int(first), int(last) + 1)
            else:
                seeds.append(int(first))
    except ValueError as error:
        raise ValueError(f"seeds {text!r} are not like 0,1,2 or 0-4") from error
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds {text!r} must be distinct non-negative numbers")
    return tuple(seeds)


def _parse_value(name: str, text: str) -> Any:
    """The value of ``--set NAME=VALUE``, typed as the option ``name`` of the first registered
    method declaring it."""
    options = next(
        spec.options
        for spec in METHODS.values()
        if spec.options is not None and name in option_names(spec.options)
    )
    return parse_option(options, name, text)


def _setting(text: str, task: Task) -> tuple[float, ...]:
    """One ``--settings`` entry: rates or a preset of the task, one rate per modality."""
    rates = parse_rates(text, task.presets)
    count, names = len(task.modalities), ", ".join(task.modalities)
    if len(rates) == count:
        return rates
    hint = preset_hint(text, task, "--settings")
    if hint:
        raise ValueError(f"--settings {text}: {hint}")
    raise ValueError(
        f"--settings {text}: {len(rates)} missing rate(s) given for the {count} modalities of "
        f"task {task.name!r} ({names})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        default=None,
        help="one of the paper's experiments, with its task, methods, settings, seeds and "
        "upper bounds (any flag given still wins, and is recorded): "
        + "; ".join(f"{name}: {protocol.title}" for name, protocol in PROTOCOLS.items())
        .replace("%", "%%"),
    )
    parser.add_argument(
        "--task", default=None, help="task name (default: the protocol's, else digits)"
    )
    parser.add_argument("--data-dir", default=None, help="data folder of tasks that read files")
    parser.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a task's own setting, repeatable, the same in every cell (as python -m mce.train)",
    )
    parser.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated variants: {', '.join(VARIANTS)}, or any other registered "
        "method (one your --task module registers) (default: mce,baseline, or none with "
        "--ablation)",
    )
    parser.add_argument(
        "--ablation",
        choices=list(ABLATIONS),
        default=None,
        help="a named set of variants added to --variants; table2: the paper's Table 2 rows a-m "
        f"({', '.join(ABLATIONS['table2'])})",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        default=None,
        help="missing-rate settings, each comma-separated rates (one per modality) or a "
        "3-modality preset a-f (default: the task's missing rates)",
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help="seeds: 0,1,2 or 0-4 or 0-2,7 (default: the protocol's, else 0,1,2)",
    )
    parser.add_argument(
        "--folds",
        default=None,
        help="cross-validation folds of a task with folds, as for --seeds (1-5); every (seed, "
        "fold) is a replicate, folder seed<k>-fold<f> (default: none, the task's fold 1)",
    )
    group = parser.add_argument_group("shared by every cell")
    for flag, options in hparam_arguments(lambda _: "default: the task's", {"missing_rates"}):
        group.add_argument(flag, **options)
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a registered method's option for every cell of that method, e.g. mce: "
        "mc_k, use_aux (a variant's own use_* switches win); redcore: kl_weight; or one a "
        "--task module's method declares",
    )
    group.add_argument(
        "--drop-all-missing",
        action="store_true",
        help="draw each modality's missing samples independently and drop the samples left "
        "with nothing (for rates where not every sample can keep a modality)",
    )
    group.add_argument(
        "--mask-scheme",
        choices=MASK_SCHEMES,
        default="exact",
        help="how each cell's training masks are drawn: exact (each modality misses exactly N x "
        "rate samples) or quota (a quota of samples per combination of modalities, PASSION's "
        "BraTS scheme) (default: exact)",
    )
    group.add_argument(
        "--upper-bounds",
        choices=UPPER_BOUND_MODES,
        default=None,
        help="what factor B's unimodal models learn from: available (each cell's masked "
        "training split: retrained for every setting and seed) or complete (the training split "
        "before masking, as the paper: trained once and shared by every cell) (default: "
        "complete with --protocol, else available)",
    )
    group.add_argument(
        "--pretrain-seed",
        type=int,
        default=None,
        help="seed of the unimodal upper-bound models (default: each cell's seed with "
        "available, 0 with complete)",
    )
    group.add_argument(
        "--score-on",
        choices=SCORE_ON,
        default="available",
        help="test samples that score a combination: available (every sample that has one of "
        "its modalities) or complete (only those that have all of them, the paper's protocol) "
        "(default: available)",
    )
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    group.add_argument("--cache-dir", default=None, help="upper-bound model cache")
    parser.add_argument(
        "--out",
        default=None,
        help="experiment folder; the same folder again continues it, reusing finished cells "
        "(default: runs/experiment-<task>)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars nor log lines of the runs: one line per cell, its result",
    )
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of torch's kernels in every cell (default: OMP_NUM_THREADS where "
        f"set, else the cores this process may use, {available_cores()} here)",
    )
    return parser


def parse_spec(argv: Sequence[str] | None = None) -> tuple[ExperimentSpec, argparse.Namespace]:
    """The experiment of the command line; bad arguments exit with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    protocol = get_protocol(args.protocol) if args.protocol else None
    if args.task is None:
        args.task = (protocol.default_task() if protocol else None) or "digits"
    try:
        task, task_options = task_from_arguments(args.task, args.task_option)
    except ValueError as error:
        parser.error(str(error))
    names: list[str] = []
    if args.variants:
        names += [name.strip() for name in args.variants.split(",") if name.strip()]
    if args.ablation:
        names += [name for name in ABLATIONS[args.ablation] if name not in names]
    if not names and protocol is None:
        names = ["mce", "baseline"]
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in HPARAM_NAMES
        if name != "missing_rates" and getattr(args, name) is not None
    }
    try:
        for item in args.set:
            name, equals, value = item.partition("=")
            options = sorted(settable_names() - set(HPARAM_NAMES))
            if not equals or name not in options:
                raise ValueError(
                    f"--set {item!r}: expected NAME=VALUE, NAME one of {', '.join(options)}"
                )
            overrides[name] = _parse_value(name, value)
        settings = tuple(_setting(text, task) for text in args.settings or ())
        seeds = parse_seeds(args.seeds) if args.seeds else None
        resolved = None
        if protocol is not None:
            resolved = resolve_protocol(
                protocol,
                task,
                variants=tuple(names) or None,
                settings=settings or None,
                seeds=seeds,
                upper_bounds=args.upper_bounds,
                overrides=overrides,
            )
            names, settings, seeds = list(resolved.variants), resolved.settings, resolved.seeds
            if protocol.kind != "cells":  # its variants are recipes it measures, not cells
                names = ["baseline"]
            args.upper_bounds = resolved.upper_bounds
        folds = parse_seeds(args.folds) if args.folds else ()
        if folds and not task.folds:
            raise ValueError(f"--folds: task {args.task!r} has no folds")
        if folds and not all(1 <= fold <= task.folds for fold in folds):
            raise ValueError(f"--folds must be in 1..{task.folds} for task {args.task!r}")
        spec = ExperimentSpec(
            task=args.task,
            variants=tuple(names),
            settings=settings,
            seeds=seeds or (0, 1, 2),
            folds=folds,
            overrides=overrides,
            device=args.device,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            task_options=task_options,
            drop_all_missing=args.drop_all_missing,
            mask_scheme=args.mask_scheme,
            upper_bounds=args.upper_bounds or "available",
            pretrain_seed=args.pretrain_seed,
            score_on=args.score_on,
            protocol=resolved.to_dict() if resolved is not None else None,
        )
        # build one cell's config now, so a bad value fails before anything runs
        if protocol is None or protocol.kind == "cells":
            cells_of(spec, task)[0].config(spec, Path("."))
    except ValueError as error:
        parser.error(str(error))
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return spec, args


def main(argv: Sequence[str] | None = None) -> int:
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)  # the runs' INFO lines: --no-progress keeps them quiet
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", handlers=[console]
    )
    spec, args = parse_spec(argv)
    costs = spec.protocol is not None and get_protocol(spec.protocol["name"]).kind == "costs"
    try:
        if costs:
            return _costs(spec, Path(args.out or "runs/experiment-table8"))
        summary = run_experiment(
            spec,
            args.out,
            progress=not args.no_progress,
            figures=not args.no_figures,
            threads=args.threads or default_threads(),
        )
    except KeyboardInterrupt:
        return 130
    except (ValueError, FloatingPointError) as error:
        print(f"{PROG}: error: {flag_names(str(error))}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as error:  # a full disk or an unwritable folder: one line
        if not (isinstance(error, OSError) or is_disk_full(error)):
            raise
        message = str(error)
        if is_disk_full(error):
            folder = Path(args.out or f"runs/experiment-{spec.task}")
            message = disk_full_message(folder, "run the same command again to continue")
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    out = Path(args.out if args.out else f"runs/experiment-{summary['task']}")
    print(_without_figures((out / "summary.md").read_text()))
    if not args.no_figures and FIGURES_MARKER in (out / "summary.md").read_text():
        print(f"figures in {out}/fig_*.png, linked from summary.md")
    print(f"summary in {out}/summary.json, summary.md, summary.csv")
    return 0


def _costs(spec: ExperimentSpec, out: Path) -> int:
    """``--protocol table8``: the step costs measured, beside the paper's."""
    from mce.experiment.costs import costs_markdown, measure_costs

    result = measure_costs(spec.device, rounds=COST_ROUNDS)
    result["protocol"] = spec.protocol
    result["package_version"] = package_version()
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "costs.json", json.dumps(result, indent=2) + "\n")
    text = costs_markdown(result)
    write_text(out / "summary.md", text)
    print(text)
    print(f"costs in {out}/costs.json, summary.md")
    return 0


def _without_figures(markdown: str) -> str:
    """``summary.md`` without its figures section (image links are of no use on a terminal)."""
    return markdown.split(FIGURES_MARKER)[0].rstrip("\n") + "\n"
