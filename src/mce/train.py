"""`python -m mce.train`: train MCE (and/or the plain baseline, or RedCore) and evaluate every
modality combination. With no arguments: the bundled digits task on the CPU, MCE next to the
baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, get_args

import torch

from mce import distributed
from mce.activity import INACTIVE_RATES_WARNING, closing_lines, term_activity
from mce.checkpoint import DiskFull, load_checkpoint, save_atomic
from mce.config import (
    HPARAM_NAMES,
    REDCORE_NAMES,
    SELECT_MODES,
    HyperParameters,
    TrainConfig,
    hparam_arguments,
)
from mce.data.dataset import MultimodalData
from mce.data.masks import PRESETS, apply_missing_rates, parse_missing_rates, presence_from_csv
from mce.evaluate import Evaluation, evaluate_combinations, evaluate_unimodal_heads
from mce.bits import popcount
from mce.lce import presence_counts
from mce.loggers import read_log
from mce.methods import METHODS, MCEConfig, MethodInputs, MethodSpec, RedCoreConfig, get_method
from mce.methods.redcore import SCHEDULES
from mce.methods.mce import ShapleyMode, Weighting
from mce.pretrain import BatchUpperBounds, UpperBounds, unimodal_model, upper_bound_table
from mce.records import (
    CONFIG,
    RESULTS,
    RunRecord,
    config_differences,
    read_config,
    write_config,
)
from mce.run_folder import lock_folder, read_json, remove_temporaries
from mce.tasks import TASKS, Task, get_task, task_from_arguments
from mce.trainer import Trainer

__all__ = [
    "TrainConfig",
    "HyperParameters",
    "UsageError",
    "run",
    "main",
    "build_parser",
    "parse_config",
    "parse_command",
    "Command",
]

log = logging.getLogger("mce.train")

COMPARE = ("mce", "baseline")  # what --method compare trains
_PRESET_HELP = ", ".join(f"{k}={v}" for k, v in PRESETS.items())


class UsageError(ValueError):
    """A configuration the task cannot run, found once its data is loaded (``--select
    validation`` without a validation split); the command line exits with status 2."""


def _setting_key(rates: tuple[float, ...]) -> str:
    return "-".join(f"{r:g}" for r in rates)


def run(
    config: TrainConfig,
    resume: bool = False,
    stop_at_step: int | None = None,
    *,
    task: Task | None = None,
    force_eval: bool = False,
) -> dict[str, dict[str, float]]:
    """Train and evaluate as configured.

    Args:
        config: the run's configuration (build it with :meth:`TrainConfig.for_task`).
        resume: continue the run in ``config.out`` from its checkpoints.
        stop_at_step: stop (with a checkpoint) once a method reaches this step.
        task: a ``Task`` object to use instead of looking ``config.task`` up by name.
        force_eval: with ``resume``, evaluate a finished run again and rewrite its results
            (without it, resuming a finished run changes nothing and returns its scores).

    The run holds the folder's lock (:func:`mce.run_folder.lock_folder`) while it runs: a
    second run in the same folder is refused.

    Under torchrun (``RANK``, ``WORLD_SIZE`` set) every process calls ``run`` alike: it joins
    the process group (:func:`mce.distributed.init`), trains data-parallel and evaluates
    sharded; rank 0 writes every file, and every rank returns the same scores.

    Returns:
        {method: {combination or "average": score in %}}, as in ``results.json``; empty when
        stopped early. The task's extra metrics and the epoch selection are in
        ``results.json`` (``metrics``, ``selection``).

    Raises:
        UsageError: ``config.select`` is "validation" and the task has no validation split.
        ValueError: a fold outside the task's folds, or another invalid setting.
    """
    if task is None:
        task = get_task(config.task, config.task_options)
    else:
        task = task.with_options(config.task_options)
    if dict(task.options) != config.task_options:  # recorded resolved and typed
        config = dataclasses.replace(config, task_options=dict(task.options))
    # a task with folds loads fold 1 unless told otherwise; config.json records which
    config = dataclasses.replace(config, fold=task.check_fold(config.fold))
    hparams = config.hparams
    rates = hparams.rates_for(task.modalities)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = distributed.init(config.device)
    if config.out is None:
        stamp = distributed.broadcast_object(time.strftime("%Y%m%d-%H%M%S"))
        config = dataclasses.replace(config, out=f"runs/{task.name}-{config.method}-{stamp}")
    names = COMPARE if config.method == "compare" else (config.method,)
    for name in names:
        get_method(name)  # an unknown method is an error before anything is written
    out = Path(config.out)
    with contextlib.ExitStack() as held:  # one run at a time in a folder, for its whole life
        distributed.on_main(lambda: held.enter_context(lock_folder(out)) and None)
        distributed.on_main(lambda: _check_folder(out, resume, config))
        if resume and not force_eval and distributed.on_main(lambda: _finished(out)):
            log.info(
                "the run in %s is complete (%s): nothing to do; --resume --force-eval "
                "re-scores it",
                out,
                RESULTS,
            )
            return distributed.on_main(lambda: _saved_scores(out))
        distributed.on_main(lambda: remove_temporaries(out))
        return _run_in_folder(config, task, device, out, names, resume, stop_at_step)


def _run_in_folder(
    config: TrainConfig,
    task: Task,
    device: torch.device,
    out: Path,
    names: tuple[str, ...],
    resume: bool,
    stop_at_step: int | None,
) -> dict[str, dict[str, float]]:
    """:func:`run` once the folder is locked and checked."""
    hparams = config.hparams
    rates = hparams.rates_for(task.modalities)
    # Data and masks first: a folder with an unreadable data set or infeasible rates stays empty.
    splits = task.splits(Path(config.data_dir) if config.data_dir else None, config.fold)
    train_full, test, validation = splits.train, splits.test, splits.validation
    if config.select == "validation" and validation is None:
        raise UsageError(
            f"--select validation needs a validation split, and task {task.name!r} has none "
            "(its load returns (train, test)); use --select last"
        )
    if config.presence_csv:
        masked = presence_from_csv(config.presence_csv, train_full)
    else:
        masked = apply_missing_rates(
            train_full, rates, config.seed, drop_all_missing=config.drop_all_missing
        )
    distributed.on_main(lambda: _start_folder(out, config, masked, resume))
    train = masked.data
    actual = masked.actual_rates
    log.info(
        "training split: %d samples, %d dropped (every modality missing); missing rates "
        "stated %s, actual %s",
        len(train),
        masked.dropped,
        masked.stated_rates,
        {name: round(rate, 4) for name, rate in actual.items()},
    )
    if len(task.modalities) > 1 and not bool((popcount(train.present) > 1).any()):
        log.warning(INACTIVE_RATES_WARNING)
    record = RunRecord(
        task=task.name,
        metric=task.metric_name,
        config=config,
        modalities=task.modalities,
        test_samples=len(test),
        missing_rates={
            "stated": masked.stated_rates,
            "actual": actual,
            "training_samples": len(train),
            "dropped_samples": masked.dropped,
            "drop_all_missing": config.drop_all_missing,
            "presence_csv": config.presence_csv,
        },
    )
    if distributed.is_active():
        log.info(
            "data parallel: %d ranks (%s); every global batch of %d samples split over them; "
            "factor B and every loss term from global-batch statistics (all-reduced each step)",
            distributed.world_size(),
            distributed.backend(),
            hparams.batch_size,
        )
        record.distributed = {
            "world_size": distributed.world_size(),
            "backend": distributed.backend(),
            "batch_statistics": "global",
        }
    progress = config.progress and distributed.is_main()
    selecting = config.select == "validation"
    record.selection = {
        "mode": config.select,
        "metric": task.selection_name if selecting else None,
        "best_epoch": {},
        "validation_score": {},
    }

    def evaluate(model, data: MultimodalData, progress: bool) -> Evaluation:
        if task.evaluate is not None:
            return task.evaluate(model, data, device, progress)
        return evaluate_combinations(
            model, task.utility, data, device=device, progress=progress, metrics=task.metrics
        )

    def validate(model) -> float:
        return evaluate(model, validation, False).value(task.selection_metric)

    def model_builder(spec: MethodSpec) -> Callable[[], torch.nn.Module]:
        """() -> the task's fresh model, adapted by the method (its own model)."""

        def build_model():
            model = task.build_model()
            if spec.adapt_model is not None:
                model = spec.adapt_model(model, config.options_for(spec.options))
            if config.row_memory_gb is not None and hasattr(model, "row_memory_gb"):
                model.row_memory_gb = config.row_memory_gb
            return model

        return build_model

    for name in names:
        timing: dict[str, float] = {}
        started = time.perf_counter()
        method = _build_method(name, task, train, config, rates, device, record.upper_bounds)
        timing["setup"] = time.perf_counter() - started
        trainer = Trainer(
            model_builder(get_method(name)),
            method,
            train,
            out / name,
            hparams,
            seed=config.seed,
            device=device,
            progress=progress,
            validate=validate if selecting else None,
            validation_name=task.selection_name,
            augment=task.augment,
        )
        if resume and trainer.has_checkpoint():
            trainer.load()
            log.info("%s: resuming at epoch %d, step %d", name, trainer.epoch, trainer.step)
        started = time.perf_counter()
        if not trainer.fit(stop_at_step=stop_at_step):
            return {}
        timing["train"] = time.perf_counter() - started
        started = time.perf_counter()
        evaluation = evaluate(trainer.model, test, progress)
        if task.evaluate_heads is not None:
            heads = task.evaluate_heads(trainer.model, test, device)
        else:
            heads = evaluate_unimodal_heads(
                trainer.model,
                task.utility,
                test,
                batch_size=min(256, task.inference_batch),
                device=device,
            )
        record.heads[name] = {modality: 100.0 * score for modality, score in heads.items()}
        timing["evaluate"] = time.perf_counter() - started
        record.scores[name] = {c: 100.0 * score for c, score in evaluation.scores.items()}
        if evaluation.metrics:
            record.metrics[name] = {
                metric: {c: 100.0 * value for c, value in values.items()}
                for metric, values in evaluation.metrics.items()
            }
        best = trainer.best_epoch if selecting else trainer.epoch
        record.selection["best_epoch"][name] = best
        record.selection["validation_score"][name] = (
            100.0 * trainer.best_score if selecting and trainer.best_score is not None else None
        )
        record.timing_s[name] = {step: round(seconds, 3) for step, seconds in timing.items()}
    if distributed.is_main():
        record.write(out)
        print(f"\n{record.markdown()}\nresults in {out}/results.json and results.md")
        activity = None
        if (out / "mce" / "log.csv").is_file() and "mce" in names:
            activity = term_activity(read_log(out / "mce" / "log.csv"), task.modalities)
        lines = closing_lines(
            record.scores, activity, task=config.task, rates=rates, seed=config.seed, out=str(out)
        )
        print("\n".join(lines))
    return record.scores


def _finished(out: Path) -> bool:
    """Whether ``out`` holds a finished run (its results are written last)."""
    return (out / RESULTS).is_file() and (out / CONFIG).is_file()


def _saved_scores(out: Path) -> dict[str, dict[str, float]]:
    results = read_json(out / RESULTS, "delete it and run --resume --force-eval to score again")
    return results.get("scores", {})


def _check_folder(out: Path, resume: bool, config: TrainConfig) -> None:
    """Refuse to resume a folder without a run, or with other settings, or to start one in a
    folder that has one."""
    if resume and not (out / CONFIG).is_file():
        raise ValueError(f"{out} holds no run to resume (no {CONFIG}); start it without --resume")
    if not resume and (out / CONFIG).exists():
        raise ValueError(
            f"{out} already holds a run: pass --resume to continue it, or choose another --out"
        )
    if resume:
        differ = config_differences(read_config(out), config)
        if differ:
            raise ValueError(
                f"--resume with settings that differ from the run in {out} "
                f"({', '.join(differ)}; see {out / CONFIG}); use the same options or a new --out"
            )


def _start_folder(out: Path, config: TrainConfig, masked, resume: bool) -> None:
    """Write (or, resuming, check) the run's configuration and masks."""
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, config, resume)
    _save_or_check_masks(out, masked, resume)


def _build_method(
    name: str,
    task: Task,
    train: MultimodalData,
    config: TrainConfig,
    rates: tuple[float, ...],
    device: torch.device,
    upper_bounds: dict | None = None,
):
    """The method ``name`` built for ``train``; when it needs unimodal upper bounds, their
    per-modality report (held-out utility, U, steps) is added to ``upper_bounds``."""
    spec = get_method(name)
    options = config.options_for(spec.options)
    upper = None
    if spec.needs_upper_bounds(options):
        bounds = _upper_bounds(task, train, config, rates, device)
        upper = bounds.table
        if task.augment is not None:  # inputs change every step: score each batch itself
            upper = BatchUpperBounds(bounds.models, task.modalities, task.utility)
            log.info("factor B: U from the frozen unimodal models run on every batch's inputs")
        if upper_bounds is not None:
            upper_bounds.update(bounds.report)
    inputs = MethodInputs(
        loss=task.loss,
        utility=task.utility,
        counts=presence_counts(train.present, len(task.modalities)),
        dataset_size=len(train),
        seed=config.seed,
        upper=upper,
        ranks=distributed.ranks(),
        batch_size=config.hparams.batch_size,
        steps=config.hparams.epochs * -(-len(train) // config.hparams.batch_size),
    )
    return spec.build(inputs, options)


def _upper_bounds(
    task: Task,
    train: MultimodalData,
    config: TrainConfig,
    rates: tuple[float, ...],
    device: torch.device,
) -> UpperBounds:
    """The unimodal upper bounds, trained (or read from the cache) by rank 0 alone; the other
    ranks of a data-parallel run wait and receive the table, the report and the models."""

    def on_rank_0() -> tuple[UpperBounds, dict[str, dict[str, torch.Tensor]]]:
        bounds = upper_bound_table(
            task,
            train,
            hparams=config.hparams,
            seed=config.seed,
            setting=_setting_key(rates),
            cache_dir=Path(config.cache_dir) if config.cache_dir else _default_cache_dir(),
            device=device,
            progress=config.progress,
            no_cache=config.no_cache,
            # inputs that change every step: U is scored on each batch, not from a table
            score_training=task.augment is None,
        )
        if not distributed.is_active():
            return bounds, {}
        states = {
            name: {key: value.cpu() for key, value in model.state_dict().items()}
            for name, model in bounds.models.items()
        }
        return UpperBounds(bounds.table, bounds.report), states

    bounds, states = distributed.on_main(on_rank_0)
    if not states:
        return bounds
    models = {}
    for name, state in states.items():
        model = unimodal_model(task, name)
        model.load_state_dict(state)
        models[name] = model.to(device)
    return UpperBounds(bounds.table, bounds.report, models)


def _default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "mce" / "upper_bounds"


def _save_or_check_masks(out: Path, masked, resume: bool) -> None:
    path = out / "masks.pt"
    state = {"present": masked.data.present, "kept": masked.kept, "dropped": masked.dropped}
    if resume and path.is_file():
        saved = load_checkpoint(
            path, "the run's training masks are lost: start it again in a new --out"
        )
        if not (
            torch.equal(saved["present"], state["present"])
            and torch.equal(saved["kept"], state["kept"])
        ):
            raise ValueError(f"the missing-modality masks differ from those saved in {path}")
        return
    save_atomic(state, path)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _task_values(name: str) -> str:
    """'digits: 30, avmnist: 280' for a hyper-parameter, from each built-in recipe."""
    values = []
    for task in TASKS:
        value = getattr(get_task(task).hparams, name)
        if isinstance(value, tuple):
            value = ",".join(f"{v:g}" for v in value) or "none"
        values.append(f"{task}: {value}")
    return "; ".join(values)


def _add_hparam_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "hyper-parameters", "default: the task's own value (shown for each built-in task)"
    )
    for flag, options in hparam_arguments(_task_values):
        if flag == "--missing-rates":
            options["help"] += (
                f": rates in [0, 1), comma-separated, or a 3-modality preset {_PRESET_HELP} "
                "(tasks may name their own: brats a-f over (T1/T1c, FLAIR, T2))"
            )
        group.add_argument(flag, **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mce.train", description=__doc__)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--task",
        default="digits",
        help=f"task: {', '.join(TASKS)}, or package.module:ATTRIBUTE naming your own "
        "mce.tasks.Task (default: digits, bundled)",
    )
    data.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a task's own setting, repeatable (brats: crop, base, levels, head; e.g. "
        "--task-option crop=32 for a small crop)",
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
    _add_mce_options(method)
    _add_redcore_options(parser)
    _add_hparam_options(parser)
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
        "column per modality, a 0/1 row per sample (reproduces a published split; tasks whose "
        "samples have ids: nuscenes)",
    )
    run_group.add_argument(
        "--select",
        choices=SELECT_MODES,
        default="last",
        help="the epoch whose model is tested: last (the paper's behaviour) or validation: the "
        "epoch with the best validation score (the task's selection metric averaged over the "
        "modality combinations, as MMIN; needs a task with a validation split) (default: last)",
    )
    run_group.add_argument(
        "--fold",
        type=int,
        default=None,
        help="cross-validation fold 1..N of a task with N folds (default: 1; tasks without "
        "folds take none)",
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
        help="CPU threads of torch's kernels (default: the cores this process may use, "
        f"{available_cores()} here)",
    )
    return parser


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _add_mce_options(group: argparse._ArgumentGroup) -> None:
    defaults = MCEConfig()
    group.add_argument(
        "--shapley",
        choices=get_args(ShapleyMode),
        default=defaults.shapley,
        help="exact Shapley values (Eq. 5), Monte Carlo permutations, the full set and "
        "--row-budget sampled subsets per sample (unbiased), or the authors' code's batch "
        "formula (not Eq. 5; for comparison studies) (default: exact)",
    )
    group.add_argument(
        "--mc-k",
        type=int,
        default=defaults.mc_k,
        help=f"permutations per sample for --shapley mc (default: {defaults.mc_k})",
    )
    group.add_argument(
        "--row-budget",
        type=int,
        default=defaults.row_budget,
        help="proper subsets drawn per sample besides the full set for --shapley sampled "
        f"(default: {defaults.row_budget})",
    )
    for term, equation in (("single", "9"), ("sub", "11"), ("aux", "13")):
        default = getattr(defaults, f"lambda_{term}")
        group.add_argument(
            f"--lambda-{term}",
            type=float,
            default=default,
            help=f"weight of L_{term} (Eq. {equation}) (default: {default:g})",
        )
        group.add_argument(
            f"--no-{term}", action="store_true", help=f"drop L_{term} (Table 2 ablation)"
        )
    group.add_argument(
        "--weighting",
        choices=get_args(Weighting),
        default=defaults.weighting,
        help="row averaging of L_sub and L_aux: per subset as Eqs. 11 and 13, or per sample as "
        "the authors' code (default: paper)",
    )
    group.add_argument(
        "--no-a", action="store_true", help="drop factor A (A = 1; Table 2 ablation)"
    )
    group.add_argument(
        "--no-b",
        action="store_true",
        help="drop factor B (B = 1, no Shapley values or unimodal pretraining)",
    )


def _mce_config(args: argparse.Namespace) -> MCEConfig:
    return MCEConfig(
        shapley=args.shapley,
        mc_k=args.mc_k,
        row_budget=args.row_budget,
        lambda_single=args.lambda_single,
        lambda_sub=args.lambda_sub,
        lambda_aux=args.lambda_aux,
        use_a=not args.no_a,
        use_b=not args.no_b,
        use_single=not args.no_single,
        use_sub=not args.no_sub,
        use_aux=not args.no_aux,
        weighting=args.weighting,
    )


def _redcore_defaults(name: str) -> str:
    """'default: 500; brats: 20857, nuscenes: 13395' for a RedCore option: the released code's
    value and the built-in tasks that differ from it."""
    default = getattr(RedCoreConfig(), name)
    text = f"default: {_option_text(default)}"
    differ = []
    for task in TASKS:
        value = getattr(get_task(task).options_for_method("redcore"), name)
        if value != default:
            differ.append(f"{task}: {_option_text(value)}")
    return f"{text}; {', '.join(differ)}" if differ else text


def _option_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return value if isinstance(value, str) else f"{value:g}"


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(width) for width in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 256,128,64, got {text!r}") from None


def _add_redcore_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "redcore",
        "RedCore's options (--method redcore); default: the released code's IEMOCAP value, or "
        "the task's own where it differs",
    )
    for spec in dataclasses.fields(RedCoreConfig):
        kind = {int: int, float: float, str: str}.get(type(spec.default), _widths)
        choices = SCHEDULES if spec.name == "schedule" else None
        group.add_argument(
            f"--{spec.name.replace('_', '-')}",
            type=kind,
            choices=choices,
            default=None,
            help=f"{spec.metadata['help']} ({_redcore_defaults(spec.name)})",
        )


def _redcore_config(args: argparse.Namespace, task: Task) -> RedCoreConfig:
    """The task's RedCore options with the flags that were given."""
    given = {name: getattr(args, name) for name in REDCORE_NAMES}
    given = {name: value for name, value in given.items() if value is not None}
    return dataclasses.replace(task.options_for_method("redcore"), **given)


def _hparam_overrides(
    parser: argparse.ArgumentParser, args: argparse.Namespace, task: Task
) -> dict:
    overrides = {name: getattr(args, name) for name in HPARAM_NAMES}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if "missing_rates" in overrides:
        try:
            overrides["missing_rates"] = parse_missing_rates(
                overrides["missing_rates"], len(task.modalities), task.presets
            )
        except ValueError as error:
            parser.error(f"--missing-rates: {error}")
    return overrides


class Command(NamedTuple):
    """What the command line asks for."""

    config: TrainConfig
    resume: bool
    force_eval: bool


def parse_config(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    """Parse and validate; bad arguments exit with status 2 and a message naming the problem.
    Returns the configuration and whether to resume."""
    command = parse_command(argv)
    return command.config, command.resume


def parse_command(argv: list[str] | None = None) -> Command:
    """:func:`parse_config` with every action the command line may ask for."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
    if args.mc_k < 1:
        parser.error(f"--mc-k must be at least 1, got {args.mc_k}")
    if args.row_budget < 1:
        parser.error(f"--row-budget must be at least 1, got {args.row_budget}")
    if args.fold is not None and not task.folds:
        parser.error(f"task {args.task!r} has no folds; it takes no --fold")
    if args.fold is not None and not 1 <= args.fold <= task.folds:
        parser.error(f"--fold must be in 1..{task.folds} for task {args.task!r}, got {args.fold}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the run folder to continue")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} requested but no CUDA GPU is available")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    try:
        hparams = dataclasses.replace(task.hparams, **_hparam_overrides(parser, args, task))
        hparams.rates_for(task.modalities)
    except ValueError as error:
        message = str(error)
        name = message.split(" ", 1)[0]
        if name in HPARAM_NAMES:  # "epochs must be ..." -> "--epochs must be ..."
            message = f"--{name.replace('_', '-')}{message[len(name) :]}"
        parser.error(message)
    try:
        mce_config = _mce_config(args)
        redcore_config = _redcore_config(args, task)
    except ValueError as error:
        parser.error(str(error))
    config = TrainConfig(
        task=args.task,
        hparams=hparams,
        method=args.method,
        mce=mce_config,
        redcore=redcore_config,
        data_dir=args.data_dir,
        seed=args.seed,
        drop_all_missing=args.drop_all_missing,
        presence_csv=args.presence_csv,
        device=args.device,
        out=args.out,
        cache_dir=args.cache_dir,
        no_cache=args.no_cache,
        progress=not args.no_progress,
        row_memory_gb=args.row_memory_gb,
        task_options=task_options,
        select=args.select,
        fold=args.fold,
        threads=args.threads or available_cores(),
    )
    return Command(config, args.resume, args.force_eval)


def _os_error_message(error: OSError, config: TrainConfig) -> str:
    if isinstance(error, DiskFull) or error.errno != errno.ENOSPC:
        return str(error)
    folder = Path(config.out or "runs")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    return (
        f"no space left on the device of {folder} ({free / 2**20:.1f} MB free): free space "
        "there (or choose another --out) and run again, with --resume to continue from the "
        "last checkpoint"
    )


def main(argv: list[str] | None = None) -> int:
    # under torchrun, ranks other than 0 report errors only
    quiet = distributed.launched() and os.environ.get("RANK", "0") != "0"
    level = logging.ERROR if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    config, resume, force_eval = parse_command(argv)
    try:
        run(config, resume=resume, force_eval=force_eval)
    except KeyboardInterrupt:
        return 130
    except UsageError as error:
        build_parser().error(str(error))  # exits with status 2
    except (ValueError, FloatingPointError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)  # ImportError: an optional extra is missing
        return 1
    except OSError as error:  # a full disk or an unwritable folder: no traceback
        print(f"error: {_os_error_message(error, config)}", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
