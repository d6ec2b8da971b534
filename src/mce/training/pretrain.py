"""Unimodal upper bounds U (Eq. 6): frozen single-modality models, trained once and cached.

Each modality's model (its encoder and unimodal head) is trained on the training samples where
the modality is present, less a held-out part that decides when to stop: a budget of optimizer
steps, an evaluation on the held-out part every ``pretrain_eval_every`` steps, the best state
kept, and a stop after ``pretrain_patience`` evaluations without improvement. Test data are never
seen. A trained model is cached under a hash of everything that changes it (see
:func:`cache_key`); the key and a sha256 of the weights are stored in the file too and checked
on load, so a stale or corrupt entry is retrained, never reused.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mce.data.dataset import PREFETCH, Batch, MultimodalData
from mce.data.lazy import LazyRows, read_ahead, take_rows
from mce.nn.model import UnimodalModel, run_unimodal
from mce.support.bits import samples_with_modality
from mce.support.checkpoint import load_checkpoint, save_atomic
from mce.support.seeding import stream
from mce.tasks.base import Task
from mce.training.config import HyperParameters
from mce.training.records import package_version
from mce.training.trainer import build_optimizer

__all__ = [
    "BatchUpperBounds",
    "UpperBounds",
    "cache_key",
    "data_fingerprint",
    "split_holdout",
    "unimodal_scores",
    "unimodal_model",
    "upper_bound_table",
]

log = logging.getLogger(__name__)

CACHE_FORMAT = 5
"""Version of the training procedure and file layout; bump it when either changes."""


class BatchUpperBounds:
    """U of a batch from the frozen unimodal models run on that batch's own inputs.

    For tasks whose training inputs change every step (random crops), a per-sample table
    measured on whole inputs would compare a different quantity with the Shapley values of the
    batch; this scores each sample where modality m is present with m's frozen model, in eval
    mode and without gradients (one forward pass per modality and step).

    Args:
        models: modality -> frozen unimodal model (input [B, ...] -> outputs).
        modalities: the task's modality order (column m of the result).
        utility: (outputs, target) -> per-sample utility in [0, 1].
    """

    def __init__(
        self,
        models: Mapping[str, nn.Module],
        modalities: Sequence[str],
        utility: Callable[[Tensor, Tensor], Tensor],
    ) -> None:
        self.models, self.modalities, self.utility = dict(models), tuple(modalities), utility
        for model in self.models.values():
            model.eval()
            model.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, batch: Batch) -> Tensor:
        """Tensor[N_b, M]: utility of m's model on each sample of ``batch`` (0 where absent)."""
        values = torch.zeros(
            batch.present.shape[0], len(self.modalities), device=batch.present.device
        )
        for m, name in enumerate(self.modalities):
            index = samples_with_modality(batch.present, m)
            if not index.numel():
                continue
            lengths = batch.lengths[name][index] if name in batch.lengths else None
            context = {key: value[index] for key, value in batch.context.items()}
            x = batch.inputs[name][index].float()
            outputs = run_unimodal(self.models[name], x, lengths, context)
            values[index, m] = self.utility(outputs, batch.target[index]).float()
        return values


@dataclass(frozen=True)
class UpperBounds:
    """The unimodal upper bounds of a training split and how their models were obtained.

    Attributes:
        table: Tensor[N, M], the utility of modality m's frozen model on each training sample
            (0 where m is absent); U_m of a batch is the sum of its column over the batch.
        report: {modality: {...}} with ``heldout_utility`` (mean utility of the chosen model on
            the held-out samples), ``training_utility`` (mean of the table's column over the
            samples with the modality, i.e. U_m / count_m over the whole split), ``samples`` and
            ``heldout_samples`` (samples with the modality, and how many of them were held
            out), ``steps`` (optimizer steps trained), ``best_step`` (the step of the chosen
            state), ``stopped_early`` (before the step budget) and ``cached`` (reused from the
            cache rather than trained in this call). JSON-ready.
        models: modality -> the frozen unimodal model (for
            :class:`BatchUpperBounds`).
    """

    table: Tensor
    report: dict[str, dict[str, Any]]
    models: dict[str, nn.Module] = dataclasses.field(default_factory=dict)


def unimodal_model(task: Task, modality: str) -> nn.Module:
    """The task's unimodal model for ``modality`` (``task.build_unimodal``, by default its
    encoder and unimodal head), freshly initialised."""
    if task.build_unimodal is not None:
        return task.build_unimodal(modality)
    model = task.build_model()
    return UnimodalModel(model.encoders[modality], model.heads[modality])


def _take(
    inputs: Tensor | LazyRows, lengths: Tensor | None, index: Tensor | slice
) -> tuple[Tensor, Tensor | None]:
    """The samples at ``index`` and their lengths; a padded sequence modality is cut to the
    longest of them, as :meth:`MultimodalData.batch` does; a lazy one is read."""
    if isinstance(inputs, LazyRows):
        return inputs.load(index)
    x = inputs[index]
    if lengths is None:
        return x, None
    part = lengths[index]
    longest = max(int(part.max()) if part.numel() else 0, 1)
    return x[:, :longest], part


def split_holdout(
    indices: Tensor, fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Split sample indices into a training part and a held-out part, at random.

    Args:
        indices: Tensor[K] int64, the samples to split (those with the modality present).
        fraction: share of them to hold out, in (0, 1); rounded, and at least one sample on
            each side.
        generator: the seeded generator drawing the split.

    Returns:
        (training indices, held-out indices), disjoint, each in increasing order, together
        ``indices``.

    Raises:
        ValueError: when fewer than 2 samples are given.
    """
    count = indices.numel()
    if count < 2:
        raise ValueError(f"{count} sample(s) cannot be split into training and held-out parts")
    held = min(max(round(fraction * count), 1), count - 1)
    order = torch.randperm(count, generator=generator)
    return indices[order[held:].sort().values], indices[order[:held].sort().values]


def data_fingerprint(data: MultimodalData) -> str:
    """The sha256 of a split's targets, presence (the missing-modality mask), inputs and
    sequence lengths and context (when it has any); of a lazy modality, its source identity and
    selection."""
    digest = hashlib.sha256()
    lengths = [data.lengths[name] for name in data.modalities if name in data.lengths]
    inputs = [data.inputs[name] for name in data.modalities]
    context = [data.context[key] for key in sorted(data.context)]
    for lazy in (value for value in inputs if isinstance(value, LazyRows)):
        digest.update(lazy.fingerprint())  # its source and selection, not every file read
    inputs = [value for value in inputs if not isinstance(value, LazyRows)]
    for tensor in (data.target, data.present, *inputs, *lengths, *context):
        digest.update(f"{tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def _pretrain_settings(hparams: HyperParameters) -> dict[str, Any]:
    """The hyper-parameters that change an upper-bound model."""
    return {
        "steps": hparams.pretrain_steps,
        "eval_every": hparams.pretrain_eval_every,
        "patience": hparams.pretrain_patience,
        "holdout": hparams.pretrain_holdout,
        "batch_size": hparams.batch_size,
        "optimizer": hparams.optimizer,
        "lr": hparams.lr,
        "weight_decay": hparams.weight_decay,
        "momentum": hparams.momentum,
        "grad_clip": hparams.grad_clip,
    }


def cache_key(
    task: Task,
    modality: str,
    model: nn.Module,
    hparams: HyperParameters,
    *,
    seed: int,
    setting: str,
    fingerprint: str,
) -> str:
    """Canonical JSON of everything that changes modality's unimodal model.

    It covers the task and its options (``Task.identity_options``: a crop size changes a model
    that ``repr`` does not show; reader threads do not), the modality, the architecture (``repr``
    of the model), the pretraining hyper-parameters, the missing-rate setting, the seed, the
    training split's
    :func:`data_fingerprint` (inputs, targets and mask), the package version and
    :data:`CACHE_FORMAT`. The cache file is named by its sha256 and stores it to check on load.
    """
    key = {
        "format": CACHE_FORMAT,
        "package_version": package_version(),
        "task": task.name,
        "modality": modality,
        "architecture": repr(model),
        "hparams": _pretrain_settings(hparams),
        "missing_rates": setting,
        "seed": seed,
        "data": fingerprint,
    }
    if task.identity_options:
        key["task_options"] = task.identity_options
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def _cache_path(cache_dir: Path, task: Task, modality: str, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{task.name}-{modality}")
    return cache_dir / f"{stem}-{digest}.pt"


def _state_digest(state: Mapping[str, Tensor]) -> str:
    """The sha256 of a model state: for each key in sorted order, the key, the tensor's dtype
    and shape, and its contiguous CPU bytes."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _load_cached(path: Path, key: str, model: nn.Module) -> dict[str, Any] | None:
    """The stored fit report after loading the cached state into ``model``, or None (with a
    log line) when the file is missing, corrupt (unreadable, or weights that do not match their
    stored sha256) or stale."""
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path)
        if state.get("key") != key:
            log.warning("cache file %s was made with other settings: retraining", path)
            return None
        if state.get("sha256") != _state_digest(state["model"]):
            log.warning(
                "cache file %s is corrupt (its weights do not match their sha256): retraining",
                path,
            )
            return None
        fit = dict(state["fit"])
        candidate = copy.deepcopy(model)  # a failed load leaves ``model`` freshly initialised
        candidate.load_state_dict(state["model"])
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as error:
        log.warning("cache file %s is unusable (%s): retraining", path, error)
        return None
    model.load_state_dict(candidate.state_dict())
    return fit


def _on(device: torch.device, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
    return x.to(device), None if lengths is None else lengths.to(device)


def _modality_rows(data: MultimodalData, modality: str, rows: Tensor) -> MultimodalData:
    """The samples at ``rows`` of ``data`` (each with ``modality`` present) as a data set of
    that modality alone: its inputs (a view when lazy), lengths, targets and context."""
    lengths = {modality: data.lengths[modality][rows]} if modality in data.lengths else {}
    return MultimodalData(
        (modality,),
        {modality: take_rows(data.inputs[modality], rows)},
        data.target[rows],
        torch.ones(rows.numel(), dtype=torch.int64),
        lengths,
        context={key: value[rows] for key, value in data.context.items()},
    )


def _epochs(data: MultimodalData, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    """Batches of ``data`` without end, each pass over it in an order drawn from
    ``generator`` when the pass begins."""
    while True:
        yield from data.batches(batch_size, torch.randperm(len(data), generator=generator))


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    task: Task,
    inputs: Tensor | LazyRows,
    lengths: Tensor | None,
    target: Tensor,
    device: torch.device,
    context: Mapping[str, Tensor],
) -> Tensor:
    """Tensor[2, K] on the CPU: per-sample utility and loss, in eval mode (dropout off), in
    chunks of ``task.inference_batch`` samples moved to ``device`` one at a time."""
    was_training = model.training
    model.eval()
    rows = []
    chunk = task.inference_batch
    chunks = [slice(first, first + chunk) for first in range(0, inputs.shape[0], chunk)]
    depth = PREFETCH if isinstance(inputs, LazyRows) else 0  # read a lazy modality ahead
    parts = read_ahead(lambda part: _take(inputs, lengths, part), chunks, depth)
    for rows_of_chunk, taken in zip(chunks, parts):
        x, part_lengths = _on(device, *taken)
        part_context = {key: value[rows_of_chunk].to(device) for key, value in context.items()}
        outputs = task.evaluator.infer(model, x, part_lengths, part_context)
        part = target[rows_of_chunk].to(device)
        rows.append(torch.stack([task.utility(outputs, part), task.loss(outputs, part)]).cpu())
    model.train(was_training)
    return torch.cat(rows, dim=1).float()


def _fit(
    model: nn.Module,
    task: Task,
    fit: MultimodalData,
    held: MultimodalData,
    hparams: HyperParameters,
    generator: torch.Generator,
    progress: bool,
) -> dict[str, Any]:
    """Train ``model`` to convergence on ``fit`` and leave it in its best state on ``held``
    (both data sets of the one modality, see :func:`_modality_rows`).

    Batches come from :meth:`MultimodalData.batches`, each pass in an order drawn from
    ``generator``, and go through ``task.augment`` on the CPU, as the trainer's do. States are
    ranked by held-out mean utility, ties broken by the lower held-out mean loss.
    """
    (modality,) = fit.modalities
    # a constant lr: the run's schedule (steps per epoch of its own split) does not apply here
    constant = dataclasses.replace(hparams, lr_schedule="step", lr_step=0)
    optimizer, _ = build_optimizer(model.parameters(), constant)
    device = next(model.parameters()).device
    held_inputs, held_lengths = held.inputs[modality], held.lengths.get(modality)
    best = (-math.inf, math.inf)
    best_state = copy.deepcopy(model.state_dict())
    best_step, stale, step = 0, 0, 0
    budget = hparams.pretrain_steps
    model.train()
    bar = tqdm(
        total=budget,
        desc=f"training the frozen {modality}-only reference model (once, cached)",
        disable=not progress,
        leave=False,
    )
    batches = _epochs(fit, hparams.batch_size, generator)
    while step < budget:
        batch = next(batches)
        if task.augment is not None:
            batch = task.augment(batch)
        batch = batch.to(device)
        x, lengths = batch.inputs[modality], batch.lengths.get(modality)
        loss = task.loss(run_unimodal(model, x, lengths, batch.context), batch.target).mean()
        optimizer.zero_grad()
        loss.backward()
        if hparams.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), hparams.grad_clip)
        optimizer.step()
        step += 1
        bar.update()
        if step % hparams.pretrain_eval_every and step < budget:
            continue
        utility, held_loss = (
            _evaluate(model, task, held_inputs, held_lengths, held.target, device, held.context)
            .mean(dim=1)
            .tolist()
        )
        bar.set_postfix(heldout=f"{utility:.3f}")
        if utility > best[0] or (utility == best[0] and held_loss < best[1]):
            best, best_step, stale = (utility, held_loss), step, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= hparams.pretrain_patience:
                break
    batches.close()  # a lazy modality's reads still pending are cancelled
    bar.close()
    model.load_state_dict(best_state)
    return {
        "heldout_utility": best[0],
        "heldout_loss": best[1],
        "heldout_samples": len(held),
        "steps": step,
        "best_step": best_step,
        "stopped_early": step < budget,
    }


def upper_bound_table(
    task: Task,
    train: MultimodalData,
    *,
    hparams: HyperParameters,
    seed: int,
    setting: str,
    cache_dir: Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
    no_cache: bool = False,
    score_training: bool = True,
    fit_data: MultimodalData | None = None,
) -> UpperBounds:
    """The unimodal upper bounds of the (masked) training split.

    For each modality m, a fresh ``unimodal_model`` (initialised with ``torch.manual_seed(seed +
    m)``) is trained on the samples of ``fit_data`` (default: ``train``) with m present, less a
    held-out fraction
    ``hparams.pretrain_holdout`` that decides early stopping; the split and the batch order come
    from the stream ``(seed, "pretrain", m)`` (:mod:`mce.support.seeding`). The model is cached in
    ``cache_dir`` under :func:`cache_key` and reused when the key matches.

    Args:
        task: the task (model, loss, utility).
        train: the training split after masking; its samples with m present are scored.
        hparams: batch size, optimizer settings and the ``pretrain_*`` budget.
        seed: the models' seed (initialisation, held-out split, batch order).
        setting: what the models learn from, as a string (part of the cache key): the
            missing-rate setting, or ``complete``.
        cache_dir: folder of cached models (created when needed).
        device: where to train and evaluate.
        progress: show progress bars.
        no_cache: retrain even when a cached model matches, and overwrite it.
        score_training: score every training sample (the table); False for a task whose
            inputs change every step, whose U comes from :class:`BatchUpperBounds`
            instead: the table is then zeros and ``training_utility`` None.
        fit_data: the split the models learn from, when not ``train``: the training split
            before masking for upper bounds "trained with complete single-modal data" (the
            paper's Fig. 8), the same for every setting and seed of a task.

    Returns:
        The [N, M] table and a per-modality report (see :class:`UpperBounds`).

    Raises:
        ValueError: when a modality is present in fewer than 2 training samples.
    """
    source = train if fit_data is None else fit_data
    table = torch.zeros(len(train), train.num_modalities)
    fingerprint = data_fingerprint(source)
    report: dict[str, dict[str, Any]] = {}
    models: dict[str, nn.Module] = {}
    for m, name in enumerate(train.modalities):
        index = samples_with_modality(train.present, m)
        fit_index = samples_with_modality(source.present, m)
        if fit_index.numel() < 2:
            raise ValueError(
                f"modality {name!r} is present in {fit_index.numel()} training sample(s); its "
                "upper-bound model needs at least 2 (training and held-out)"
            )
        torch.manual_seed(seed + m)
        model = unimodal_model(task, name).to(device)
        key = cache_key(
            task, name, model, hparams, seed=seed, setting=setting, fingerprint=fingerprint
        )
        path = _cache_path(cache_dir, task, name, key)
        fit = None if no_cache else _load_cached(path, key, model)
        cached = fit is not None
        if fit is None:
            generator = stream(seed, "pretrain", m)
            fit_rows, held_rows = split_holdout(fit_index, hparams.pretrain_holdout, generator)
            # kept on the CPU; batches move to the device one at a time
            fit_part = _modality_rows(source, name, fit_rows)
            held_part = _modality_rows(source, name, held_rows)
            fit = _fit(model, task, fit_part, held_part, hparams, generator, progress)
            del fit_part, held_part  # freed before the training split is scored
            weights = model.state_dict()
            entry = {"model": weights, "key": key, "fit": fit, "sha256": _state_digest(weights)}
            save_atomic(entry, path)
        models[name] = model
        training_utility = None
        if score_training:
            scored = _modality_rows(train, name, index)
            utility = _evaluate(
                model,
                task,
                scored.inputs[name],
                scored.lengths.get(name),
                scored.target,
                torch.device(device),
                scored.context,
            )[0]
            table[index, m] = utility
            training_utility = float(utility.mean())
        report[name] = {
            "heldout_utility": fit["heldout_utility"],
            "training_utility": training_utility,
            "samples": int(fit_index.numel()),
            "scored_samples": int(index.numel()),
            "trained_on": "complete" if fit_data is not None else "available",
            "seed": seed,
            "heldout_samples": fit["heldout_samples"],
            "steps": fit["steps"],
            "best_step": fit["best_step"],
            "stopped_early": fit["stopped_early"],
            "cached": cached,
        }
        training = (
            f"training {task.metric_name} {training_utility:.4f}"
            if training_utility is not None
            else "training split not scored (U per batch)"
        )
        log.info(
            "unimodal upper bound for %s: held-out %s %.4f (%d samples), %s (%d samples); "
            "%d steps, best at %d%s; %s %s",
            name,
            task.metric_name,
            fit["heldout_utility"],
            fit["heldout_samples"],
            training,
            index.numel(),
            fit["steps"],
            fit["best_step"],
            ", stopped early" if fit["stopped_early"] else "",
            "reusing" if cached else "trained and cached at",
            path,
        )
    return UpperBounds(table=table, report=report, models=models)


def unimodal_scores(
    bounds: UpperBounds, task: Task, data: MultimodalData, device: torch.device | str = "cpu"
) -> dict[str, float | None]:
    """{modality: mean utility of its frozen model on the samples of ``data`` (e.g. the test
    split) that have it}: the modality's capability alone, the "Upperbound" of the paper's
    Fig. 8 and 9 (None for a modality no sample has)."""
    scores: dict[str, float | None] = {}
    for m, name in enumerate(data.modalities):
        index = samples_with_modality(data.present, m)
        if not index.numel() or name not in bounds.models:
            scores[name] = None
            continue
        rows = _modality_rows(data, name, index)
        utility = _evaluate(
            bounds.models[name],
            task,
            rows.inputs[name],
            rows.lengths.get(name),
            rows.target,
            torch.device(device),
            rows.context,
        )[0]
        scores[name] = float(utility.mean())
    return scores
