"""The command line of ``python -m mce.train``: ``argv`` -> a
:class:`~mce.training.config.TrainConfig`, then :func:`mce.training.run.run`.

Every hyper-parameter (:class:`~mce.training.config.HyperParameters`) and every registered method's
options (``MethodSpec.options``) get their flags from their dataclass fields
(:func:`mce.training.config.option_arguments`), including methods that a ``--task
package.module:ATTRIBUTE`` module registers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from mce.data.masks import PRESETS
from mce.methods import METHODS
from mce.support import distributed
from mce.support.checkpoint import DiskFull, disk_full_message, is_disk_full
from mce.tasks import TASKS, Task, get_task, task_from_arguments
from mce.training.config import (
    HPARAM_NAMES,
    MASK_SCHEMES,
    PRECISIONS,
    SCORE_ON,
    SELECT_MODES,
    UPPER_BOUND_MODES,
    HyperParameters,
    TrainConfig,
    hparam_arguments,
    option_arguments,
    parse_rates,
)
from mce.training.records import CONFIG, config_from_dict, read_config
from mce.training.run import UsageError, run

__all__ = [
    "build_parser",
    "parse_config",
    "parse_command",
    "Command",
    "main",
    "available_cores",
]

DESCRIPTION = (
    "`python -m mce.train`: train MCE (and/or the plain baseline, or RedCore) and evaluate "
    "every modality combination. With no arguments: the bundled digits task on the CPU, MCE "
    "next to the baseline."
)
_PRESET_HELP = ", ".join(f"{k}={v}" for k, v in PRESETS.items())
PROG = "python -m mce.train"
# settings named in messages of the library, as the command line spells them
_FLAG_NAMES = {
    "drop_all_missing=True": "--drop-all-missing",
    "mask_scheme='quota'": "--mask-scheme quota",
    "mask_scheme='exact'": "--mask-scheme exact",
    "presence_csv=": "--presence-csv ",
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the command line's flags
    (:func:`flag_names`) and a pointer to ``--help``, without the usage block (both commands,
    ``mce.train`` and ``mce.experiment``, use it)."""

    def error(self, message: str):  # type: ignore[override]
        help_line = f"({self.prog} --help lists every option)"
        self.exit(2, f"{self.prog}: error: {flag_names(message)}\n{help_line}\n")


def flag_names(message: str) -> str:
    """A library message with the settings it names spelt as the command line's flags: the
    names of :data:`_FLAG_NAMES`, and a hyper-parameter's name opening the message
    (``epochs must be at least 1`` -> ``--epochs must be at least 1``)."""
    for name, flag in _FLAG_NAMES.items():
        message = message.replace(name, flag)
    name = message.split(" ", 1)[0]
    if name in HPARAM_NAMES:
        message = f"--{name.replace('_', '-')}{message[len(name) :]}"
    return message


def preset_hint(text: str, task: Task, flag: str) -> str:
    """Why a paper preset (a-f, three modalities) does not fit ``task``, with rates that
    would; empty when ``text`` is no such preset."""
    if text not in PRESETS or text in (task.presets or {}):
        return ""
    count = len(task.modalities)
    return (
        f"the presets {', '.join(PRESETS)} are the paper's rates for three modalities, and "
        f"task {task.name!r} has {count} ({', '.join(task.modalities)}): give one rate per "
        f"modality, comma-separated (e.g. {flag} {','.join(['0.3'] * count)})"
    )


class Command(NamedTuple):
    """What the command line asks for."""

    config: TrainConfig
    resume: bool
    force_eval: bool


def build_parser(task_values: bool = True) -> argparse.ArgumentParser:
    """The parser of ``python -m mce.train``, with a flag for every hyper-parameter and every
    registered method's options. ``task_values``: each built-in task's value in the help of
    a hyper-parameter or method option (imports every task module)."""
    return _build_parser(task_values)[0]


def _build_parser(task_values: bool) -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    """The parser, and for each registered method with options the fields its flags set."""
    parser = OneLineParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument(
        "--config",
        default=None,
        metavar="RUN/config.json",
        help="run again with the settings recorded in a run's config.json; any other flag "
        "given overrides its recorded value (--out: a new folder, by default a fresh one)",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--task",
        default="digits",
        help=f"task: {', '.join(TASKS)}, or package.module:ATTRIBUTE naming your own "
        "mce.tasks.Task (default: digits, bundled)",
    )
    every_task = (
        f"; each built-in task's options and defaults: {_task_options_help()}"
        if task_values
        else ""
    )
    data.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a task's own setting, repeatable (e.g. --task-option crop=32 for brats with a "
        "small crop)" + every_task,
    )
    data.add_argument(
        "--data-dir",
        default=None,
        help="data folder (required by tasks that read files; digits is bundled)",
    )
    method = parser.add_argument_group("method")
    method.add_argument(
        "--method",
        default="compare",
        help="; ".join(f"{name}: {spec.summary}" for name, spec in METHODS.items())
        + "; compare: mce and baseline trained the same way, reported side by side; or a "
        "method your --task module registers (default: compare)",
    )
    _add_hparam_options(parser, task_values)
    run_group = parser.add_argument_group("run")
    run_group.add_argument(
        "--seed", type=int, default=0, help="seed of masks, initialisation, order (default: 0)"
    )
    run_group.add_argument(
        "--drop-all-missing",
        action="store_true",
        help="draw each modality's mask independently and drop the samples left with no "
        "modality (the actual rates are then lower than stated, and reported); by default the "
        "stated rates are met exactly and rates that cannot leave every sample a modality are "
        "an error",
    )
    run_group.add_argument(
        "--presence-csv",
        default=None,
        metavar="FILE",
        help="read the training masks from FILE instead of drawing them (--missing-rates is then "
        "ignored; results report the file's rates): a header sample_token (or id) and one "
        "column per modality, a 0/1 row per sample; or, unchanged, PASSION's BraTS2020 "
        "Brats2020_imb_split_mr*.csv or MCE's nuScenes nuScenes_imb_*.csv (reproduces a "
        "published split; the file must list exactly the training split's samples)",
    )
    run_group.add_argument(
        "--mask-scheme",
        choices=MASK_SCHEMES,
        default="exact",
        help="how the training masks are drawn: exact (each modality misses exactly N x rate "
        "samples, rounded) or quota (each combination of modalities gets floor(N P) samples, P "
        "its probability under independent draws, the rest a drawn non-empty combination: "
        "PASSION's BraTS splits; rates near, not at, the stated ones) (default: exact)",
    )
    run_group.add_argument(
        "--score-on",
        choices=SCORE_ON,
        default="available",
        help="which test samples score a modality combination: available (every sample "
        "holding one of its modalities, given those it has) or complete (only the samples "
        "holding all of them: the paper's protocol); the table's n column counts them "
        "(default: available)",
    )
    run_group.add_argument(
        "--select",
        choices=SELECT_MODES,
        default="last",
        help="the epoch whose model is tested: last (the paper's behaviour) or validation: the "
        "epoch with the best validation score (the task's selection metric averaged over the "
        "modality combinations, as MMIN; needs a task with a validation split or "
        "--validation-share) (default: last)",
    )
    run_group.add_argument(
        "--fold",
        type=int,
        default=None,
        help="cross-validation fold 1..N of a task with N folds (default: 1; tasks without "
        "folds take none)",
    )
    run_group.add_argument(
        "--validation-share",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of the training split held out (seeded, not trained on) to score every "
        "epoch, for tasks without a validation split (those with one score it), e.g. 0.1; "
        "it is then the validation split of --select validation and --early-stop; 0: train "
        "on every training sample (default: 0)",
    )
    run_group.add_argument(
        "--early-stop",
        type=int,
        default=None,
        metavar="PATIENCE",
        help="stop training after PATIENCE epochs without a better validation score (needs "
        "a task with a validation split, or --validation-share); results.json records the "
        "epoch it stopped at (default: off, train every epoch)",
    )
    run_group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32",
        help="arithmetic of the training steps: 32 (float32), bf16 (bfloat16 autocast; on "
        "the CPU too) or fp16 (float16 autocast with a gradient scaler; CUDA only); weights, "
        "optimizer, validation and tests stay float32 (default: 32)",
    )
    run_group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    run_group.add_argument(
        "--out",
        default=None,
        help="run folder: config, masks, checkpoints, logs, results; an existing run is only "
        "continued with --resume (default: runs/<task>-<method>-<date>-<time>)",
    )
    run_group.add_argument(
        "--cache-dir",
        default=None,
        help="cache of unimodal upper-bound models, keyed by task, model, pretraining "
        "hyper-parameters, missing rates, seed, training data and masks, and mce version "
        "(default: $XDG_CACHE_HOME/mce or ~/.cache/mce)",
    )
    run_group.add_argument(
        "--upper-bounds",
        choices=UPPER_BOUND_MODES,
        default="available",
        help="what factor B's frozen unimodal models learn from: available (each modality's "
        "present samples of the masked training split, retrained per setting and seed) or "
        "complete (every training sample with the modality before masking, as the paper's "
        "'trained with complete single-modal data': once per task and --pretrain-seed, shared "
        "by every setting and seed; uses data a deployment with missing modalities would not "
        "have) (default: available)",
    )
    run_group.add_argument(
        "--pretrain-seed",
        type=int,
        default=None,
        help="seed of the unimodal upper-bound models (default: --seed with --upper-bounds "
        "available, 0 with complete)",
    )
    run_group.add_argument(
        "--no-cache",
        action="store_true",
        help="retrain the unimodal upper-bound models even when cached (and overwrite them)",
    )
    run_group.add_argument(
        "--row-memory-gb",
        type=float,
        default=None,
        help="dense tasks (brats): activation budget of one chunk of plan rows; rows beyond it "
        "run in chunks recomputed in the backward pass (default: the task's)",
    )
    run_group.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (a finished run is left as it "
        "is)",
    )
    run_group.add_argument(
        "--force-eval",
        action="store_true",
        help="with --resume: evaluate a finished run again and rewrite its results",
    )
    run_group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run_group.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of torch's kernels (default: OMP_NUM_THREADS where set, else "
        f"the cores this process may use, {available_cores()} here)",
    )
    return parser, _add_method_options(parser, task_values)


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Torch threads when ``--threads`` is not given: ``OMP_NUM_THREADS`` where set (a busy
    machine's runs side by side then keep to it; more threads than free cores make every step
    wait), else every core this process may run on."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) >= 1:
        return int(value)
    return available_cores()


def _task_options_help() -> str:
    """'digits: none; brats: crop=128, ...': each built-in task's options and defaults."""
    described = []
    for name in TASKS:
        try:
            options = get_task(name).options
        except ImportError:  # an optional extra is missing
            continue
        text = ", ".join(f"{key}={value}" for key, value in options.items()) or "none"
        described.append(f"{name}: {text}")
    return "; ".join(described)


def _task_values(name: str) -> str:
    """'digits: 30; avmnist: 280' for a hyper-parameter, from each built-in recipe."""
    values = []
    for task in TASKS:
        value = getattr(get_task(task).hparams, name)
        if isinstance(value, tuple):
            value = ",".join(f"{v:g}" for v in value) or "none"
        values.append(f"{task}: {value}")
    return "; ".join(values)


def _add_hparam_options(parser: argparse.ArgumentParser, task_values: bool) -> None:
    group = parser.add_argument_group(
        "hyper-parameters", "default: the task's own value (shown for each built-in task)"
    )
    describe = _task_values if task_values else (lambda name: "default: the task's")
    for flag, options in hparam_arguments(describe):
        if flag == "--missing-rates":
            options["help"] += (
                f": rates in [0, 1), comma-separated, or a 3-modality preset {_PRESET_HELP} "
                "(tasks may name their own: brats a-f over (T1/T1c, FLAIR, T2))"
            )
        group.add_argument(flag, **options)


def _add_method_options(
    parser: argparse.ArgumentParser, task_values: bool
) -> dict[str, list[str]]:
    """A group of flags for each registered method with options; returns, per method, the
    fields its flags set. A field named like a run setting or hyper-parameter gets no flag;
    one named like an earlier method's field shares that method's flag."""
    reserved = set(vars(parser.parse_args([])))
    shared: set[str] = set()
    settable: dict[str, list[str]] = {}
    for name, spec in METHODS.items():
        if spec.options is None:
            continue
        group = parser.add_argument_group(
            name,
            f"options of --method {name}; default: its own, or the task's where it differs",
        )
        settable[name] = []

        def describe(field: str, name: str = name) -> str:
            return _method_defaults(name, field, task_values)

        for flag, options in option_arguments(spec.options, describe):
            dest = options["dest"]
            if dest in reserved:
                continue
            if dest not in shared:
                try:
                    group.add_argument(flag, **options)
                except argparse.ArgumentError:  # its flag belongs to another option
                    continue
                shared.add(dest)
            settable[name].append(dest)
    return settable


def _method_defaults(method: str, name: str, task_values: bool) -> str:
    """'default: 500; brats: 20857' for a method's option: its options type's default and the
    built-in tasks that differ from it ('' for a switch)."""
    default = getattr(METHODS[method].options(), name)
    if isinstance(default, bool):
        return ""
    text = f"default: {_option_text(default)}"
    if not task_values:
        return text
    differ = []
    for task in TASKS:
        value = getattr(get_task(task).options_for_method(method), name)
        if value != default:
            differ.append(f"{task}: {_option_text(value)}")
    return f"{text}; {', '.join(differ)}" if differ else text


def _option_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return value if isinstance(value, str) else f"{value:g}"


def _early_arguments(argv: Sequence[str]) -> argparse.Namespace | None:
    """``--task`` and ``--config`` read before the full parse (None: unreadable; the full
    parse reports it)."""
    early = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    early.add_argument("--task", default=None)
    early.add_argument("--config", default=None)
    try:
        return early.parse_known_args(list(argv))[0]
    except argparse.ArgumentError:
        return None


def _import_task_module(task: str | None) -> None:
    """Import the module of ``--task package.module:ATTRIBUTE`` so that the methods it
    registers get their flags; a module that does not import is reported by the parse."""
    module = task.partition(":")[0] if task and ":" in task else ""
    if module:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def _recorded_config(path: str) -> TrainConfig:
    """The configuration recorded in a run's ``config.json`` (or its folder).

    Raises:
        ValueError: the file is missing, unreadable or holds invalid settings.
    """
    folder = Path(path)
    if not folder.is_dir():
        if folder.name != CONFIG:
            raise ValueError(f"--config takes a run's {CONFIG} (or its folder), got {path}")
        folder = folder.parent
    return config_from_dict(read_config(folder))


def _given_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations of the flags that ``argv`` gives explicitly."""
    saved = {action.dest: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_known_args(list(argv))[0]))
    finally:
        for action in parser._actions:
            action.default = saved[action.dest]


# the run settings (each its flag's destination) a re-run takes from config.json unless given
_RECORDED = (
    "task",
    "data_dir",
    "method",
    "seed",
    "drop_all_missing",
    "presence_csv",
    "mask_scheme",
    "score_on",
    "upper_bounds",
    "pretrain_seed",
    "select",
    "fold",
    "device",
    "cache_dir",
    "row_memory_gb",
    "validation_share",
    "early_stop",
    "precision",
)


def _apply_recorded(args: argparse.Namespace, recorded: TrainConfig, given: set[str]) -> None:
    """Take the recorded settings into ``args`` where no flag was given (the recorded task's
    options first, those given after them)."""
    for name in _RECORDED:
        if name not in given:
            setattr(args, name, getattr(recorded, name))
    if args.task == recorded.task:
        items = [f"{key}={value}" for key, value in recorded.task_options.items()]
        args.task_option = items + list(args.task_option)


def _asks_for_help(argv: Sequence[str]) -> bool:
    return any(arg == "-h" or (len(arg) > 2 and "--help".startswith(arg)) for arg in argv)


def _hparam_overrides(
    parser: argparse.ArgumentParser, args: argparse.Namespace, task: Task
) -> dict[str, Any]:
    overrides = {name: getattr(args, name) for name in HPARAM_NAMES}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if "missing_rates" in overrides:
        try:
            overrides["missing_rates"] = parse_rates(overrides["missing_rates"], task.presets)
        except ValueError as error:
            parser.error(f"--missing-rates: {error}")
    return overrides


def _method_options(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    task: Task,
    settable: dict[str, list[str]],
    recorded: TrainConfig | None = None,
) -> dict[str, Any]:
    """Every registered method's options: the task's defaults (or the ``recorded`` run's
    options) with the flags given."""
    options = {}
    for name, fields in settable.items():
        spec = METHODS[name]
        given = {field: getattr(args, field) for field in fields}
        given = {field: value for field, value in given.items() if value is not None}
        for field in dataclasses.fields(spec.options):
            minimum = field.metadata.get("minimum")
            value = given.get(field.name)
            if minimum is not None and value is not None and not value >= minimum:
                flag = field.metadata.get("flag", f"--{field.name.replace('_', '-')}")
                parser.error(f"{flag} must be at least {minimum}, got {value}")
        try:
            base = recorded.options_for(name) if recorded is not None else None
            base = task.options_for_method(name) if base is None else base
            options[name] = dataclasses.replace(base, **given)
        except ValueError as error:
            parser.error(str(error))
    return options


def parse_config(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    """Parse and validate; bad arguments exit with status 2 and a message naming the problem.
    Returns the configuration and whether to resume."""
    command = parse_command(argv)
    return command.config, command.resume


def parse_command(argv: list[str] | None = None) -> Command:
    """:func:`parse_config` with every action the command line may ask for."""
    argv = sys.argv[1:] if argv is None else list(argv)
    early = _early_arguments(argv)
    recorded = None
    if early is not None and early.config is not None:
        try:
            recorded = _recorded_config(early.config)
        except ValueError as error:
            OneLineParser(prog=PROG).error(f"--config: {error}")
    _import_task_module(early.task if early and early.task else recorded and recorded.task)
    parser, settable = _build_parser(task_values=_asks_for_help(argv))
    args = parser.parse_args(argv)
    if recorded is not None:
        _apply_recorded(args, recorded, _given_flags(parser, argv))
    if not 0 <= args.validation_share < 1:
        parser.error(f"--validation-share must be in [0, 1), got {args.validation_share}")
    if args.force_eval and not args.resume:
        parser.error("--force-eval re-scores a finished run: use it with --resume and --out")
    try:
        task, task_options = task_from_arguments(args.task, args.task_option)
    except ValueError as error:
        parser.error(str(error))
    if args.row_memory_gb is not None and not 0 < args.row_memory_gb < float("inf"):
        parser.error(f"--row-memory-gb must be a positive number, got {args.row_memory_gb}")
    if args.method != "compare" and args.method not in METHODS:  # after --task's imports
        parser.error(
            f"--method {args.method!r} is not a registered method; choose from "
            f"{', '.join([*METHODS, 'compare'])}"
        )
    if task.needs_data_dir and args.data_dir is None:
        parser.error(f"--data-dir is required by task {args.task!r}")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a directory")
    if args.data_dir is not None and not task.needs_data_dir:
        parser.error(f"task {args.task!r} uses bundled data and takes no --data-dir")
    if args.fold is not None and not task.folds:
        parser.error(f"task {args.task!r} has no folds; it takes no --fold")
    if args.fold is not None and not 1 <= args.fold <= task.folds:
        parser.error(f"--fold must be in 1..{task.folds} for task {args.task!r}, got {args.fold}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.early_stop is not None and args.early_stop < 1:
        parser.error(f"--early-stop must be at least 1 epoch, got {args.early_stop}")
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the run folder to continue")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} requested but no CUDA GPU is available")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    if recorded is not None and recorded.task != args.task:  # another task: its own settings
        recorded = None
    base: HyperParameters = (
        recorded.hparams if recorded is not None and recorded.hparams else task.hparams
    )
    try:
        hparams = dataclasses.replace(base, **_hparam_overrides(parser, args, task))
        hparams.rates_for(task.modalities)
    except ValueError as error:
        hint = preset_hint(args.missing_rates or "", task, "--missing-rates")
        parser.error(str(error) + (f"; {hint}" if hint else ""))
    settings = dict(
        task=args.task,
        hparams=hparams,
        method=args.method,
        method_options=_method_options(parser, args, task, settable, recorded),
        data_dir=args.data_dir,
        seed=args.seed,
        drop_all_missing=args.drop_all_missing,
        presence_csv=args.presence_csv,
        mask_scheme=args.mask_scheme,
        # rates taken from a recorded run keep how they were set there
        missing_rates_stated=args.missing_rates is not None
        or (recorded is not None and bool(recorded.missing_rates_stated)),
        score_on=args.score_on,
        upper_bounds=args.upper_bounds,
        pretrain_seed=args.pretrain_seed,
        device=args.device,
        out=args.out,
        cache_dir=args.cache_dir,
        no_cache=args.no_cache,
        progress=not args.no_progress,
        row_memory_gb=args.row_memory_gb,
        task_options=task_options,
        select=args.select,
        validation_share=args.validation_share,
        early_stop=args.early_stop,
        precision=args.precision,
        fold=args.fold,
        threads=args.threads or default_threads(),
    )
    try:
        config = TrainConfig(**settings)
    except ValueError as error:  # "seed must be ..." -> "--seed must be ..."
        message = str(error)
        name = message.split(" ", 1)[0]
        if name in settings:
            message = f"--{name.replace('_', '-')}{message[len(name) :]}"
        parser.error(message)
    return Command(config, args.resume, args.force_eval)


def _os_error_message(error: BaseException, config: TrainConfig) -> str:
    if isinstance(error, DiskFull) or not is_disk_full(error):
        return str(error)
    folder = Path(config.out or "runs")
    return disk_full_message(folder)


def main(argv: list[str] | None = None) -> int:
    # under torchrun, ranks other than 0 report errors only
    quiet = distributed.launched() and os.environ.get("RANK", "0") != "0"
    level = logging.ERROR if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    config, resume, force_eval = parse_command(argv)
    try:
        run(config, resume=resume, force_eval=force_eval, verbose=True)
    except KeyboardInterrupt:
        return 130
    except UsageError as error:
        build_parser(task_values=False).error(str(error))  # exits with status 2
    except (ValueError, FloatingPointError, ImportError) as error:
        # ImportError: an optional extra is missing
        print(f"error: {flag_names(str(error))}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk or an unwritable folder: no traceback
        print(f"error: {_os_error_message(error, config)}", file=sys.stderr)
        return 1
    except RuntimeError as error:  # torch reports a full disk as a RuntimeError
        if not is_disk_full(error):
            raise
        print(f"error: {_os_error_message(error, config)}", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown()
    return 0


