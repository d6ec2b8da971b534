"""The run: train the configured methods on a task and evaluate every modality combination.

:func:`run` takes a :class:`~mce.training.config.TrainConfig` (plain data) and resolves what it
leaves unset from the task (:func:`resolve_config`); :func:`config_for` builds one from a task and
single settings. The command line that builds a config from ``argv`` is
:mod:`mce.training.cli`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import logging.handlers
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mce.data.dataset import MultimodalData
from mce.data.masks import (
    MaskedSplit,
    apply_missing_rates,
    apply_quota_masks,
    as_it_is,
    observed_missing_rates,
    presence_from_csv,
)
from mce.evaluation.combinations import Evaluation
from mce.methods import METHODS, MethodInputs, MethodSpec, get_method
from mce.science.lce import presence_counts
from mce.support import distributed
from mce.support.bits import popcount
from mce.support.checkpoint import load_checkpoint, save_atomic
from mce.support.seeding import stream
from mce.tasks import Task, get_task
from mce.training.activity import INACTIVE_RATES_WARNING, closing_lines, term_activity
from mce.training.config import HPARAM_NAMES, TrainConfig, option_names, parse_rates
from mce.training.loggers import read_log, write_hparams
from mce.training.pretrain import (
    BatchUpperBounds,
    UpperBounds,
    unimodal_model,
    unimodal_scores,
    upper_bound_table,
)
from mce.training.records import (
    CONFIG,
    RESULTS,
    RunRecord,
    config_differences,
    read_config,
    save_model,
    write_config,
)
from mce.training.run_folder import lock_folder, read_json, remove_temporaries
from mce.training.trainer import Trainer

__all__ = ["run", "config_for", "resolve_config", "UsageError", "COMPARE", "RUN_LOG"]

log = logging.getLogger("mce.train")

RUN_LOG = "run.log"  # every log line of the run, in its folder

COMPARE = ("mce", "baseline")  # what --method compare trains


def config_for(task: str | Task = "digits", **settings: Any) -> TrainConfig:
    """A run configuration: the task's hyper-parameters and method options with ``settings``
    applied.

    ``settings`` may name any field of :class:`HyperParameters` (``epochs=2``; missing rates
    also as text or a preset name of the task), of a registered method's options (``mc_k=10``
    for MCE, ``kl_weight=0.001`` for RedCore: applied to the task's defaults of every method
    whose options have that field) or of :class:`TrainConfig` (``method="mce"``); anything
    else is a ``ValueError`` listing the valid names.

    ``missing_rates`` given here are stated: the run masks the training split to them,
    counting the data's own absences. Without them the task's default rates apply to complete
    training data only, and data that already lacks modalities is trained on as it is (see
    :class:`~mce.tasks.Task`, ``hparams``).

    Raises:
        ValueError: an unknown setting, or an invalid value (naming it).
    """
    options = settings.get("task_options") or {}
    settings.setdefault("missing_rates_stated", "missing_rates" in settings)
    recipe = get_task(task, options) if isinstance(task, str) else task.with_options(options)
    own = set(option_names(TrainConfig)) - {"task", "hparams"}
    run_settings = {name: settings.pop(name) for name in list(settings) if name in own}
    hparams = {name: settings.pop(name) for name in list(settings) if name in HPARAM_NAMES}
    if isinstance(hparams.get("missing_rates"), str):
        hparams["missing_rates"] = parse_rates(hparams["missing_rates"], recipe.presets)
    fields = _method_option_names()
    unknown = sorted(set(settings) - {name for names in fields.values() for name in names})
    if unknown:
        valid = own | set(HPARAM_NAMES) | {name for names in fields.values() for name in names}
        raise ValueError(
            f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    given = dict(run_settings.pop("method_options", None) or {})
    method_options = {}
    for method, names in fields.items():
        start = given.pop(method, None) or recipe.options_for_method(method)
        changes = {name: value for name, value in settings.items() if name in names}
        method_options[method] = dataclasses.replace(start, **changes)
    run_settings["fold"] = recipe.check_fold(run_settings.get("fold"))  # 1 for a task with folds
    return TrainConfig(
        task=task if isinstance(task, str) else recipe.name,
        hparams=dataclasses.replace(recipe.hparams, **hparams),
        method_options={**method_options, **given},
        **run_settings,
    )


def resolve_config(config: TrainConfig, task: Task | None = None) -> TrainConfig:
    """``config`` with what it leaves unset taken from the task (``config.task`` looked up
    when ``task`` is None): its hyper-parameters, every registered method's options, its
    options typed and resolved, and the fold (1 for a task with folds).

    Raises:
        ValueError: an unknown task or task option, a fold outside the task's folds, or method
            options of the wrong type.
    """
    return _resolved(config, task)[0]


def _resolved(config: TrainConfig, task: Task | None) -> tuple[TrainConfig, Task]:
    """:func:`resolve_config` and the task configured with the config's task options."""
    if task is None:
        task = get_task(config.task, config.task_options)
    else:
        task = task.with_options(config.task_options)
    method_options = dict(config.method_options)
    for name, spec in METHODS.items():
        if spec.options is None:
            continue
        options = method_options.get(name)
        if options is None:
            method_options[name] = task.options_for_method(name)
        elif not isinstance(options, spec.options):
            raise ValueError(
                f"method_options[{name!r}] must be a {spec.options.__name__}, got "
                f"{type(options).__name__}"
            )
    config = dataclasses.replace(
        config,
        hparams=config.hparams if config.hparams is not None else task.hparams,
        method_options=method_options,
        task_options=dict(task.options),  # recorded resolved and typed
        fold=task.check_fold(config.fold),  # a task with folds loads fold 1 unless told
    )
    return config, task


def _method_option_names() -> dict[str, tuple[str, ...]]:
    """Registered method name -> the field names of its options (methods with options)."""
    return {
        name: option_names(spec.options)
        for name, spec in METHODS.items()
        if spec.options is not None
    }


class UsageError(ValueError):
    """A configuration the task cannot run, found once its data is loaded (``--select
    validation`` or ``--early-stop`` without a validation split); the command line exits with
    status 2."""


def _setting_key(rates: tuple[float, ...]) -> str:
    return "-".join(f"{r:g}" for r in rates)


def run(
    config: TrainConfig,
    resume: bool = False,
    stop_at_step: int | None = None,
    *,
    task: Task | None = None,
    force_eval: bool = False,
    verbose: bool = False,
) -> dict[str, dict[str, float]]:
    """Train and evaluate as configured.

    Args:
        config: the run's configuration (build it with :func:`config_for`).
        resume: continue the run in ``config.out`` from its checkpoints.
        stop_at_step: stop (with a checkpoint) once a method reaches this step.
        task: a ``Task`` object to use instead of looking ``config.task`` up by name.
        force_eval: with ``resume``, evaluate a finished run again and rewrite its results
            (without it, resuming a finished run changes nothing and returns its scores).
        verbose: print the results table and the closing lines (as the command line does);
            otherwise the run prints nothing (it logs, and writes its files in ``config.out``).

    Every log line of the ``mce`` loggers goes to ``run.log`` in the run folder while it runs
    (rank 0; appended to when resuming).

    The run holds the folder's lock (:func:`mce.training.run_folder.lock_folder`) while it runs: a
    second run in the same folder is refused.

    Under torchrun (``RANK``, ``WORLD_SIZE`` set) every process calls ``run`` alike: it joins
    the process group (:func:`mce.support.distributed.init`), trains data-parallel and evaluates
    sharded; rank 0 writes every file, and every rank returns the same scores.

    Returns:
        {method: {combination or "average": score in %}}, as in ``results.json``; empty when
        stopped early. The task's extra metrics and the epoch selection are in
        ``results.json`` (``metrics``, ``selection``).

    Raises:
        UsageError: ``config.select`` is "validation" or ``config.early_stop`` is set, and
            there is no validation split: the task has none and ``validation_share`` holds
            out no sample.
        ValueError: a fold outside the task's folds, or another invalid setting.
    """
    # the task's values where the config leaves them unset; config.json records them resolved
    config, task = _resolved(config, task)
    config.hparams.rates_for(task.modalities)  # a wrong count fails before anything is written
    _check_score_on(config, task)
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
        distributed.on_main(lambda: _check_folder(out, resume, config, task.runtime_options))
        run_log = held.enter_context(_RunLog()) if distributed.is_main() else None
        if resume and not force_eval and distributed.on_main(lambda: _finished(out)):
            log.info(
                "the run in %s is complete (%s): nothing to do; --resume --force-eval "
                "re-scores it",
                out,
                RESULTS,
            )
            return distributed.on_main(lambda: _saved_scores(out))
        distributed.on_main(lambda: remove_temporaries(out))
        return _run_in_folder(
            config, task, device, out, names, resume, stop_at_step, verbose, run_log
        )


class _RunLog:
    """Every record of the ``mce`` loggers (INFO and above) while the context lasts, written
    to ``run.log`` in the run folder once :meth:`start` names it (the records before that
    too); without :meth:`start` nothing is written."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("mce")
        self.handler: logging.Handler = logging.handlers.MemoryHandler(
            capacity=1 << 20, flushLevel=logging.CRITICAL + 1
        )
        self.handler.setLevel(logging.INFO)
        self.level = self.logger.level

    def __enter__(self) -> _RunLog:
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)
        return self

    def start(self, out: Path) -> None:
        """Write the records so far, and every one after, to ``out/run.log`` (appended)."""
        file = logging.FileHandler(out / RUN_LOG, encoding="utf-8")
        file.setLevel(logging.INFO)
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for record in self.handler.buffer:
            file.handle(record)
        self.logger.removeHandler(self.handler)
        self.handler.close()
        self.handler = file
        self.logger.addHandler(file)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
        self.handler.close()


def _hold_out(
    masked_data: MultimodalData, full: MultimodalData, kept: torch.Tensor, share: float, seed: int
) -> tuple[MultimodalData, MultimodalData, torch.Tensor]:
    """(training rest, held-out validation samples, their positions in ``full``): ``share`` of
    the masked training split, drawn from the stream (seed, "validation"); the held-out samples
    with all their inputs (from ``full``, the split before masking), the rest with their
    masks."""
    order = torch.randperm(len(masked_data), generator=stream(seed, "validation"))
    count = _held_out_count(share, len(masked_data))
    held, rest = order[:count].sort().values, order[count:].sort().values
    return masked_data.subset(rest), full.subset(kept[held]), kept[held]


def _held_out_count(share: float, samples: int) -> int:
    """How many of ``samples`` training samples ``--validation-share`` holds out (one always
    stays to train on)."""
    return min(round(share * samples), samples - 1)


def _check_validation_source(
    config: TrainConfig, task: Task, validation: MultimodalData | None, training_samples: int
) -> None:
    """Refuse ``--select validation`` and ``--early-stop`` when there is nothing to validate
    on: no validation split and no ``--validation-share`` holding out a sample.

    Raises:
        UsageError: naming the flag and what to give.
    """
    needs = [
        flag
        for flag, asked in (
            ("--select validation", config.select == "validation"),
            ("--early-stop", config.early_stop is not None),
        )
        if asked
    ]
    held = _held_out_count(config.validation_share, training_samples)
    if not needs or validation is not None or held > 0:
        return
    share = (
        f"--validation-share {config.validation_share:g} holds out no sample of its "
        f"{training_samples}"
        if config.validation_share
        else "no --validation-share was given"
    )
    raise UsageError(
        f"{' and '.join(needs)} needs a validation split, and task {task.name!r} has none (its "
        f"load returns (train, test)) and {share}: hold out a share of the training split with "
        "--validation-share (e.g. 0.1), or use --select last without --early-stop"
    )


def _training_masks(
    config: TrainConfig, task: Task, data: MultimodalData
) -> tuple[MaskedSplit, tuple[float, ...], str]:
    """The training split masked, the missing rates trained at and where they come from:
    "presence_csv" (the file's masks), "data" (no rates stated and the data already lacks
    modalities: trained as it is, at its own rates), "stated" or "task" (masks drawn at
    ``config.hparams``' rates, the data's own absences counting towards them; the task's
    default rates on complete data).

    Raises:
        ValueError: rates the data cannot meet (naming the achievable ones), or a malformed
            presence file.
    """
    rates = config.hparams.rates_for(task.modalities)
    if config.presence_csv:
        return presence_from_csv(config.presence_csv, data), rates, "presence_csv"
    complete = (1 << len(task.modalities)) - 1
    if not config.missing_rates_stated and bool((data.present != complete).any()):
        masked = as_it_is(data)
        return masked, tuple(masked.actual_rates.values()), "data"
    source = "stated" if config.missing_rates_stated else "task"
    if config.mask_scheme == "quota":
        return apply_quota_masks(data, rates, config.seed), rates, source
    masked = apply_missing_rates(
        data, rates, config.seed, drop_all_missing=config.drop_all_missing
    )
    return masked, rates, source


def _check_score_on(config: TrainConfig, task: Task) -> None:
    """Refuse ``score_on`` other than "available" for an evaluator that cannot take it."""
    if config.score_on == "available":
        return
    parameters = inspect.signature(task.evaluator.evaluate).parameters
    if "score_on" not in parameters and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    ):
        raise ValueError(
            f"score_on={config.score_on!r}: the evaluator of task {task.name!r} "
            f"({type(task.evaluator).__name__}) takes no score_on; use score_on='available' "
            "or give its evaluate a score_on argument"
        )


def _run_in_folder(
    config: TrainConfig,
    task: Task,
    device: torch.device,
    out: Path,
    names: tuple[str, ...],
    resume: bool,
    stop_at_step: int | None,
    verbose: bool,
    run_log: _RunLog | None,
) -> dict[str, dict[str, float]]:
    """:func:`run` once the folder is locked and checked."""
    hparams = config.hparams
    # Data and masks first: a folder with an unreadable data set or infeasible rates stays empty.
    splits = task.splits(Path(config.data_dir) if config.data_dir else None, config.fold)
    train_full, test, validation = splits.train, splits.test, splits.validation
    masked, rates, rates_source = _training_masks(config, task, train_full)
    _check_validation_source(config, task, validation, len(masked.data))
    distributed.on_main(lambda: _start_folder(out, config, masked, resume, task.runtime_options))
    if run_log is not None:
        run_log.start(out)
    train = masked.data
    actual = masked.actual_rates
    held_out = 0
    if validation is None and config.validation_share > 0:
        # scored every epoch, never trained on: masks stay those of the whole split, upper
        # bounds and training use the rest
        train, validation, held_positions = _hold_out(
            train, train_full, masked.kept, config.validation_share, config.seed
        )
        # never trained on, not even by the upper bounds of complete data
        keep = torch.ones(len(train_full), dtype=torch.bool)
        keep[held_positions] = False
        train_full = train_full.subset(torch.nonzero(keep).flatten())
        held_out = len(validation)
        if not held_out:
            validation = None
        actual = observed_missing_rates(train)
        log.info(
            "validation: %d training samples held out (--validation-share %g), scored every "
            "epoch",
            held_out,
            config.validation_share,
        )
    if rates_source == "data":
        log.info(
            "training split: %d samples as they are, no masks drawn (the data already lacks "
            "modalities and no missing rates were stated; stated rates, each at least the "
            "data's own, mask more); missing rates %s",
            len(train),
            {name: round(rate, 4) for name, rate in actual.items()},
        )
    else:
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
            "source": rates_source,
            "training_samples": len(train),
            "dropped_samples": masked.dropped,
            "validation_samples": held_out,
            "drop_all_missing": config.drop_all_missing,
            "presence_csv": config.presence_csv,
            "mask_scheme": config.mask_scheme,
        },
        validation={
            "source": None
            if validation is None
            else ("training share" if held_out else "task"),
            "share": config.validation_share if held_out else None,
            "samples": len(validation) if validation is not None else 0,
            "held_out_of_training": held_out,
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
        "early_stop": config.early_stop,  # patience in epochs, None: off
        "stopped_epoch": {},  # {method: the last epoch trained when it stopped early, or None}
    }

    def evaluate(model, data: MultimodalData, progress: bool) -> Evaluation:
        if config.score_on == "available":  # an evaluator may not take score_on
            return task.evaluator.evaluate(task, model, data, device, progress)
        return task.evaluator.evaluate(
            task, model, data, device, progress, score_on=config.score_on
        )

    def validate(model) -> dict[str, float]:
        """The selection metric on every combination of the validation split, and its
        ``average``."""
        evaluation = evaluate(model, validation, False)
        metric = task.selection_metric
        return dict(evaluation.metrics[metric] if metric else evaluation.scores)

    def model_builder(spec: MethodSpec) -> Callable[[], torch.nn.Module]:
        """() -> the task's fresh model, adapted by the method (its own model)."""

        def build_model():
            model = task.build_model()
            if spec.adapt_model is not None:
                model = spec.adapt_model(model, config.options_for(spec.name))
            if config.row_memory_gb is not None and hasattr(model, "row_memory_gb"):
                model.row_memory_gb = config.row_memory_gb
            return model

        return build_model

    for name in names:
        timing: dict[str, float] = {}
        started = time.perf_counter()
        method = _build_method(
            name, task, train, config, rates, device, record.upper_bounds, train_full, test
        )
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
            validate=validate if validation is not None else None,
            validation_name=task.selection_name,
            select_best=selecting,
            augment=task.augment,
            early_stop=config.early_stop,
            precision=config.precision,
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
        heads = task.evaluator.evaluate_heads(task, trainer.model, test, device)
        record.heads[name] = {modality: 100.0 * score for modality, score in heads.items()}
        timing["evaluate"] = time.perf_counter() - started
        record.scores[name] = {c: 100.0 * score for c, score in evaluation.scores.items()}
        record.samples[name] = dict(evaluation.samples)
        if evaluation.metrics:
            record.metrics[name] = {
                metric: {c: 100.0 * value for c, value in values.items()}
                for metric, values in evaluation.metrics.items()
            }
        best = trainer.best_epoch if selecting else trainer.epoch
        record.selection["best_epoch"][name] = best
        record.selection["stopped_epoch"][name] = trainer.stopped_epoch
        record.selection["validation_score"][name] = (
            100.0 * trainer.best_score if selecting and trainer.best_score is not None else None
        )
        record.timing_s[name] = {step: round(seconds, 3) for step, seconds in timing.items()}
        if distributed.is_main():
            write_hparams(out / name, _hparams_of(config, name), _test_metrics(record, name))
            save_model(out, trainer.model, config, name)  # the tested weights, for mce.load
    if distributed.is_main():
        record.write(out)
        if verbose:
            print(summary(record, out, task, rates))
    return record.scores


def summary(record: RunRecord, out: Path, task: Task, rates: tuple[float, ...]) -> str:
    """The results table, where the results are, and the closing lines of a run."""
    activity = None
    if (out / "mce" / "log.csv").is_file() and "mce" in record.scores:
        activity = term_activity(read_log(out / "mce" / "log.csv"), task.modalities)
    config = record.config
    lines = closing_lines(
        record.scores, activity, task=config.task, rates=rates, seed=config.seed, out=str(out)
    )
    return "\n".join(
        [f"\n{record.markdown()}\nresults in {out}/results.json and results.md", *lines]
    )


def _hparams_of(config: TrainConfig, method: str) -> dict[str, Any]:
    """The settings of one method's training, for TensorBoard's hparams."""
    values = config.to_dict()
    options = values.pop("method_options").get(method)
    values.pop("out")
    values["method"] = method
    return {**values, **({"options": options} if options else {})}


def _test_metrics(record: RunRecord, method: str) -> dict[str, float]:
    """One method's test averages (%), for TensorBoard's hparams."""
    metrics = {f"test/{record.metric}": record.scores[method]["average"]}
    for metric, values in record.metrics.get(method, {}).items():
        if "average" in values:
            metrics[f"test/{metric}"] = values["average"]
    return metrics


def _finished(out: Path) -> bool:
    """Whether ``out`` holds a finished run (its results are written last)."""
    return (out / RESULTS).is_file() and (out / CONFIG).is_file()


def _saved_scores(out: Path) -> dict[str, dict[str, float]]:
    results = read_json(out / RESULTS, "delete it and run --resume --force-eval to score again")
    return results.get("scores", {})


def _check_folder(
    out: Path, resume: bool, config: TrainConfig, runtime_options: frozenset[str]
) -> None:
    """Refuse to resume a folder without a run, or with other settings (``runtime_options``:
    task options free to differ), or to start one in a folder that has one."""
    if resume and not (out / CONFIG).is_file():
        raise ValueError(f"{out} holds no run to resume (no {CONFIG}); start it without --resume")
    if not resume and (out / CONFIG).exists():
        raise ValueError(
            f"{out} already holds a run: pass --resume to continue it, or choose another --out"
        )
    if resume:
        differ = config_differences(read_config(out), config, runtime_options)
        if differ:
            raise ValueError(
                f"--resume with settings that differ from the run in {out} "
                f"({', '.join(differ)}; see {out / CONFIG}); use the same options or a new --out"
            )


def _start_folder(
    out: Path, config: TrainConfig, masked, resume: bool, runtime_options: frozenset[str]
) -> None:
    """Write (or, resuming, check) the run's configuration and masks."""
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, config, resume, runtime_options)
    _save_or_check_masks(out, masked, resume)


def _build_method(
    name: str,
    task: Task,
    train: MultimodalData,
    config: TrainConfig,
    rates: tuple[float, ...],
    device: torch.device,
    upper_bounds: dict | None = None,
    complete: MultimodalData | None = None,
    test: MultimodalData | None = None,
):
    """The method ``name`` built for ``train``; when it needs unimodal upper bounds, their
    per-modality report (held-out utility, U, steps, and the ``test_utility`` of each model on
    ``test`` when given) is added to ``upper_bounds``. ``complete`` is the training split before
    masking, which ``config.upper_bounds == "complete"`` trains the upper-bound models on
    (``train`` when not given)."""
    spec = get_method(name)
    options = config.options_for(spec.name)
    upper = None
    if spec.needs_upper_bounds(options):
        bounds = _upper_bounds(task, train, config, rates, device, complete)
        upper = bounds.table
        if task.augment is not None:  # inputs change every step: score each batch itself
            upper = BatchUpperBounds(bounds.models, task.modalities, task.utility)
            log.info("factor B: U from the frozen unimodal models run on every batch's inputs")
        if upper_bounds is not None:
            upper_bounds.update(bounds.report)
            if test is not None and distributed.is_main():
                for modality, score in unimodal_scores(bounds, task, test, device).items():
                    upper_bounds[modality]["test_utility"] = score
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
        augment=task.augment,
    )
    return spec.build(inputs, options)


def _upper_bounds(
    task: Task,
    train: MultimodalData,
    config: TrainConfig,
    rates: tuple[float, ...],
    device: torch.device,
    complete: MultimodalData | None = None,
) -> UpperBounds:
    """The unimodal upper bounds, trained (or read from the cache) by rank 0 alone; the other
    ranks of a data-parallel run wait and receive the table, the report and the models. With
    ``config.upper_bounds == "complete"`` they learn from ``complete`` (the training split
    before masking), so every setting and seed of the task shares them."""
    on_complete = config.upper_bounds == "complete"

    def on_rank_0() -> tuple[UpperBounds, dict[str, dict[str, torch.Tensor]]]:
        bounds = upper_bound_table(
            task,
            train,
            hparams=config.hparams,
            seed=config.upper_bound_seed,
            setting="complete" if on_complete else _setting_key(rates),
            fit_data=(complete if complete is not None else train) if on_complete else None,
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

