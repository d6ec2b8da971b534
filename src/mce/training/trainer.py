"""The training loop: one method, atomic per-epoch checkpoints, exact resume, deferred Ctrl-C,
early stopping and mixed precision."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from mce.data.dataset import Batch, MultimodalData
from mce.methods import EpochMethod, EpochPlan, StatefulMethod, TrainingMethod
from mce.support import distributed
from mce.support.checkpoint import load_checkpoint, save_atomic
from mce.support.seeding import stream
from mce.training.config import HyperParameters
from mce.training.loggers import RunLogger

__all__ = ["Trainer", "autocast", "build_optimizer", "epoch_order", "CHECKPOINT", "AUTOCAST"]

log = logging.getLogger("mce.train")

CHECKPOINT = "checkpoint.pt"


PER_STEP_SCHEDULES = ("onecycle",)  # stepped after every optimizer step, not every epoch

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}  # precision -> autocast dtype


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context of a training step's forward pass and loss at ``precision``: "32" none,
    "bf16" / "fp16" ``torch.autocast`` to that dtype on ``device``'s type (the weights stay
    float32; ops that autocast keeps in float32, and the mce ops that take only float32,
    get float32 inputs).

    Raises:
        ValueError: an unknown precision.
    """
    if precision == "32":
        return contextlib.nullcontext()
    if precision not in AUTOCAST:
        raise ValueError(f"precision must be one of 32, {', '.join(AUTOCAST)}, got {precision!r}")
    return torch.autocast(device.type, dtype=AUTOCAST[precision])


def build_optimizer(
    parameters, hparams: HyperParameters, steps_per_epoch: int = 1
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer and its schedule: per epoch StepLR (constant when ``lr_step`` is 0) or
    poly, ``lr (1 - epoch / epochs)^lr_power``; per step OneCycle (Simple-BEV's: 5 % warm-up,
    linear annealing, no momentum cycling) over ``epochs x steps_per_epoch`` steps."""
    if hparams.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            parameters, lr=hparams.lr, momentum=hparams.momentum, weight_decay=hparams.weight_decay
        )
    elif hparams.optimizer == "adamw":
        optimizer = torch.optim.AdamW(parameters, lr=hparams.lr, weight_decay=hparams.weight_decay)
    else:
        optimizer = torch.optim.Adam(parameters, lr=hparams.lr, weight_decay=hparams.weight_decay)
    if hparams.lr_schedule == "onecycle":
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=hparams.lr,
            total_steps=hparams.epochs * steps_per_epoch + 1,
            pct_start=0.05,
            anneal_strategy="linear",
            cycle_momentum=False,
        )
    if hparams.lr_schedule == "poly":
        epochs, power = hparams.epochs, hparams.lr_power
        return optimizer, torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: max(0.0, 1.0 - epoch / epochs) ** power
        )
    step = hparams.lr_step or hparams.epochs + 1
    gamma = hparams.lr_gamma if hparams.lr_step else 1.0
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step, gamma)


def epoch_order(seed: int, epoch: int, num_samples: int) -> torch.Tensor:
    """The data order of an epoch: a permutation drawn from the stream ``(seed, "order",
    epoch)`` (:mod:`mce.support.seeding`), independent of the masks' draw and of every other
    epoch's."""
    return torch.randperm(num_samples, generator=stream(seed, "order", epoch))


class Trainer:
    """Runs one method to completion with atomic per-epoch checkpoints and exact resume.

    The data order of epoch e is a permutation drawn from the stream (seed, "order", e)
    (:mod:`mce.support.seeding`, independent of the masks' draw); the checkpoint holds the
    model, optimizer, scheduler, the CPU and CUDA RNG states, the position (epoch, batch,
    step) and the method's own state (a :class:`~mce.methods.StatefulMethod`'s), so an
    interrupted run resumed from its checkpoint reproduces the uninterrupted run exactly on the
    CPU (with one thread where multi-threaded kernels sum in varying order), and up to the GPU
    kernels' own nondeterminism on a GPU.

    With ``validate``, the model is scored after every epoch (logged as ``validation/<name>``
    in ``log.csv``, and with every modality combination in TensorBoard, on the epoch's last
    step, and as one INFO line); the best epoch is the first to reach the highest average
    (:attr:`best_epoch`, :attr:`best_score`). With ``select_best`` too, its state is kept, in
    the checkpoint too; when training ends the model holds that best state. Otherwise the
    model is the last epoch's. With ``early_stop`` too, training ends after that many epochs
    without a better score (:attr:`stopped_epoch`, checkpointed: a resumed run stops at the
    same epoch).

    With ``precision`` "bf16" or "fp16", each step's forward pass and loss run under
    :func:`autocast`; the backward, the optimizer and the weights stay float32. "fp16" scales
    the loss with a ``torch.amp.GradScaler`` (unscaled before clipping; its state is in the
    checkpoint).

    In a data-parallel run (torchrun, :mod:`mce.support.distributed`) every rank walks the same
    global batches and trains on its slice of each (``MultimodalData.batches(part=...)``); the
    method's step runs as the forward of a DistributedDataParallel module, which averages the
    gradients over the ranks in the backward. Each rank draws dropout and augmentations from its own
    random stream (rank 0's is the single process's). Rank 0 writes the checkpoint (with every
    rank's RNG states and the world size) and the logs (each value the mean over the ranks); a
    checkpoint is resumed only by a run with the same number of ranks.

    A method that acts between epochs (:class:`~mce.methods.EpochMethod`) has its
    ``begin_epoch`` called before every epoch (eval mode, no gradients, the random generators
    restored afterwards); the plan it returns (entries of samples and the modalities each keeps)
    replaces the epoch's samples, shuffled by the epoch's order. The plan and whether the pass
    has run for the current epoch are checkpointed, so a run killed during or after the pass
    resumes exactly. Under torchrun, when the plan's last global batch would leave a rank
    without a sample, its last ``len(plan) mod batch_size`` shuffled entries (fewer than the
    ranks) are left out of that epoch. A per-step schedule (OneCycle) follows the share of
    training done (epoch + batch / batches of the epoch), so a longer epoch spreads the
    schedule's steps over its batches.

    Args:
        build_model: () -> a fresh model (called after seeding).
        method: the training objective.
        train: the (masked) training split.
        run_dir: folder of this method's checkpoint and logs.
        hparams: epochs, batch size, optimizer, schedule, gradient clipping.
        seed: initialisation and data order.
        device: where the model and batches live.
        progress: show progress bars.
        validate: model -> validation scores in [0, 1] (higher is better), {combination:
            score, ..., "average": score} (the average decides) or one number, called after
            every epoch; None: no validation.
        validation_name: what ``validate`` measures, for the logs.
        select_best: the best validated epoch's model is the result (else the last epoch's).
        augment: batch -> transformed batch, applied to every training batch before it moves
            to ``device`` (e.g. the task's random crops); None: none.
        early_stop: stop after this many epochs without a better validation score (needs
            ``validate``); None: train every epoch.
        precision: "32", "bf16" or "fp16" (see above).

    Raises:
        ValueError: ``early_stop`` without ``validate``, or an unknown ``precision``.
    """

    def __init__(
        self,
        build_model: Callable[[], nn.Module],
        method: TrainingMethod,
        train: MultimodalData,
        run_dir: Path,
        hparams: HyperParameters,
        *,
        seed: int,
        device: torch.device,
        progress: bool = True,
        validate: Callable[[nn.Module], float] | None = None,
        validation_name: str = "score",
        select_best: bool = True,
        augment: Callable[[Batch], Batch] | None = None,
        early_stop: int | None = None,
        precision: str = "32",
    ) -> None:
        if early_stop is not None and validate is None:
            raise ValueError(
                "early_stop needs a validation split to score every epoch; none was given"
            )
        autocast(precision, device)  # an unknown precision fails here
        self.precision, self.early_stop = precision, early_stop
        # the epoch after which training stopped early (1-based), None while it has not
        self.stopped_epoch: int | None = None
        self.augment = augment
        self.select_best = select_best and validate is not None
        self.method, self.train, self.run_dir, self.hparams = method, train, run_dir, hparams
        self.seed, self.device, self.progress = seed, device, progress
        self.validate, self.validation_key = validate, f"validation/{validation_name}"
        self.validation_name = validation_name
        # the selected epoch (1-based), its validation score and model state (on the CPU)
        self.best_epoch: int | None = None
        self.best_score: float | None = None
        self.best_model: dict[str, torch.Tensor] | None = None
        self.ranks = distributed.ranks()
        torch.manual_seed(seed)
        self.model = build_model().to(device)
        self.step_module: nn.Module | None = None  # the DistributedDataParallel step
        if self.ranks is not None:
            distributed.check_batches(len(train), hparams.batch_size, self.ranks.world_size)
            self.step_module = distributed.data_parallel(_MethodStep(self.model, method), device)
            if self.ranks.rank:  # dropout masks and crops of its own (rank 0: one process's)
                torch.manual_seed(seed + (self.ranks.rank << 32))
        self.optimizer, self.scheduler = build_optimizer(
            self.model.parameters(), hparams, steps_per_epoch=-(-len(train) // hparams.batch_size)
        )
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.per_step_schedule = hparams.lr_schedule in PER_STEP_SCHEDULES
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        # an EpochMethod's plan of the current epoch, and the epoch its pass last ran for
        self.plan: EpochPlan | None = None
        self.batches_this_epoch = -(-len(train) // hparams.batch_size)
        self.prepared_epoch: int | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def finished(self) -> bool:
        return self.epoch >= self.hparams.epochs or self.stopped_epoch is not None

    def state(self) -> dict:
        """The checkpoint's contents (a collective in a data-parallel run: it gathers every
        rank's RNG states)."""
        rng = _rng_states()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng[0],
            # dropout on a GPU draws from the CUDA generators
            "cuda_rng": rng[1],
            # every rank's (rng, cuda_rng), in rank order (one process: its own)
            "rank_rng": distributed.gather_objects(rng),
            "world_size": distributed.world_size(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            # the best validated epoch (its model with select_best, else None)
            "best": None
            if self.best_score is None
            else {"model": self.best_model, "score": self.best_score, "epoch": self.best_epoch},
            "stopped_epoch": self.stopped_epoch,
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            # the method's own state across steps (RedCore's supervision weights), if any
            "method": self.method.state_dict() if isinstance(self.method, StatefulMethod) else None,
            # an EpochMethod's plan of the current epoch and the epoch its pass ran for
            "epoch_plan": None if self.plan is None else self.plan.state_dict(),
            "prepared_epoch": self.prepared_epoch,
        }

    def save(self) -> None:
        """Write the checkpoint atomically (rank 0; every rank must call it)."""
        distributed.broadcast_buffers(self.model)
        state = self.state()
        if distributed.is_main():
            save_atomic(state, self.checkpoint_path)

    def has_checkpoint(self) -> bool:
        """Whether rank 0 finds a checkpoint to resume from (the same answer on every rank)."""
        return distributed.on_main(self.checkpoint_path.is_file)

    def load(self) -> None:
        """Continue from the checkpoint that rank 0 reads (every rank must call it).

        Raises:
            ValueError: the checkpoint is missing or corrupt, or was written by a run with
                another number of ranks; the method keeps state across steps and the
                checkpoint holds none.
        """
        state = distributed.on_main(self._read_checkpoint)
        if isinstance(self.method, StatefulMethod):
            if state.get("method") is None:
                raise ValueError(
                    f"{self.checkpoint_path} holds no {self.method.name} method state "
                    "(written by another method?); start the run again in a new --out"
                )
            self.method.load_state_dict(state["method"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        rng, cuda_rng = (
            (state["rng"], state.get("cuda_rng"))
            if self.ranks is None
            else state["rank_rng"][self.ranks.rank]
        )
        torch.set_rng_state(rng)
        if cuda_rng is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_rng)
        self.epoch, self.batch_in_epoch, self.step = (
            state["epoch"],
            state["batch_in_epoch"],
            state["step"],
        )
        plan = state.get("epoch_plan")
        self.plan = None if plan is None else EpochPlan(plan["index"], plan["present"])
        self.prepared_epoch = state.get("prepared_epoch")
        best = state.get("best")
        if best is not None:
            self.best_model, self.best_score, self.best_epoch = (
                best["model"],
                best["score"],
                best["epoch"],
            )
        self.stopped_epoch = state.get("stopped_epoch")

    def _read_checkpoint(self) -> dict:
        state = load_checkpoint(
            self.checkpoint_path,
            "delete it to train this method again from its start, or start the run in a new --out",
        )
        saved, world = state.get("world_size", 1), distributed.world_size()
        if saved != world:
            raise ValueError(
                f"{self.checkpoint_path} was written by a run of {_processes(saved)} and this "
                f"run has {_processes(world)}: resume it with {_processes(saved)} (torchrun "
                "with the same --nnodes x --nproc-per-node as before; plain `python -m "
                "mce.train` for 1), as each rank's batch slices and random streams depend on "
                "the number"
            )
        return state

    def _order(self, epoch: int) -> torch.Tensor:
        return epoch_order(self.seed, epoch, len(self.train))

    def _begin_epoch(self) -> None:
        """Run an :class:`EpochMethod`'s pass for the current epoch (every rank alike)."""
        distributed.broadcast_buffers(self.model)
        rng, cuda_rng = _rng_states()
        self.model.eval()
        with torch.no_grad():
            plan = self.method.begin_epoch(self.model, self.train, self.epoch)  # type: ignore[attr-defined]
        self.model.train()
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        if plan is not None:
            if not isinstance(plan, EpochPlan):
                raise TypeError(
                    f"{self.method.name}.begin_epoch must return an EpochPlan or None, "
                    f"got {type(plan).__name__}"
                )
            plan.check(self.train.present)
        self.plan, self.prepared_epoch = plan, self.epoch

    def _epoch_entries(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The current epoch's samples in order, and the modalities each entry keeps (None:
        all of its own)."""
        if self.plan is None:
            return self._order(self.epoch), None
        order = epoch_order(self.seed, self.epoch, len(self.plan))
        if self.ranks is not None:  # every rank needs a sample of the last batch
            last = order.numel() % self.hparams.batch_size
            if 0 < last < self.ranks.world_size:
                order = order[: order.numel() - last]
        return self.plan.index[order], self.plan.present[order]

    def fit(self, stop_at_step: int | None = None) -> bool:
        """Train until the last epoch (True) or until ``stop_at_step`` / Ctrl-C (False); both
        leave a checkpoint to resume from. With ``validate``, a finished run leaves the best
        epoch's state in the model (the checkpoint keeps the last epoch's beside it)."""
        extra = (self.validation_key,) if self.validate is not None else ()
        logger: RunLogger | _NoLogger = _NoLogger()
        if distributed.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            logger = RunLogger(self.run_dir, resume_step=self.step, extra_fields=extra)
        try:
            with _DeferredInterrupt() as interrupt:
                finished = self._fit_epochs(logger, stop_at_step, interrupt)
        finally:
            logger.close()
        if finished and self.select_best and self.best_model is not None:
            self.model.load_state_dict(self.best_model)
        return finished

    def _select(self, logger: RunLogger | _NoLogger) -> None:
        """Score the epoch just finished on the validation split; keep its state if best (with
        ``select_best``), and stop when ``early_stop`` epochs passed without a better score
        (rank 0's scores decide on every rank)."""
        distributed.broadcast_buffers(self.model)
        rng, cuda_rng = _rng_states()  # scoring draws nothing from the training's streams
        scores = distributed.broadcast_object(_validation_scores(self.validate(self.model)))
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        score = scores["average"]
        logger.log_validation(self.step - 1, self.epoch - 1, self.validation_key, scores)
        log.info(
            "%s epoch %d/%d: validation %s %.2f %% (average over the modality combinations)",
            self.method.name,
            self.epoch,
            self.hparams.epochs,
            self.validation_name,
            100.0 * score,
        )
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_epoch = score, self.epoch
            if self.select_best:
                self.best_model = {
                    key: value.detach().to("cpu", copy=True)
                    for key, value in self.model.state_dict().items()
                }
            return
        stale = self.epoch - (self.best_epoch or 0)
        if self.early_stop is not None and stale >= self.early_stop and not self.finished:
            self.stopped_epoch = self.epoch
            log.info(
                "%s: early stop after epoch %d/%d, %d epoch(s) without a better validation "
                "%s than epoch %d's %.2f %%",
                self.method.name,
                self.epoch,
                self.hparams.epochs,
                stale,
                self.validation_name,
                self.best_epoch,
                100.0 * self.best_score,
            )

    def _fit_epochs(
        self,
        logger: RunLogger | _NoLogger,
        stop_at_step: int | None,
        interrupt: _DeferredInterrupt,
    ) -> bool:
        batch_size, epochs = self.hparams.batch_size, self.hparams.epochs
        part = None if self.ranks is None else (self.ranks.rank, self.ranks.world_size)
        stop = False  # Ctrl-C, agreed by every rank in a data-parallel run
        while not self.finished:
            if isinstance(self.method, EpochMethod) and self.prepared_epoch != self.epoch:
                self._begin_epoch()
            self.model.train()
            order, keep = self._epoch_entries()
            batches_per_epoch = -(-order.numel() // batch_size)
            self.batches_this_epoch = batches_per_epoch
            batches = self.train.batches(
                batch_size, order, start=self.batch_in_epoch, part=part, present=keep
            )
            bar = tqdm(
                batches,
                total=batches_per_epoch,
                initial=self.batch_in_epoch,
                desc=f"{self.method.name} epoch {self.epoch + 1}/{epochs}",
                disable=not (self.progress and distributed.is_main()),
                leave=False,
            )
            for batch in bar:
                if stop_at_step is not None and self.step >= stop_at_step:
                    self.save()
                    return False
                if stop or (self.ranks is None and interrupt.requested):
                    self.save()
                    run_folder = self.run_dir.parent
                    log.warning(
                        "interrupted: checkpoint saved at step %d in %s; continue with "
                        "`%s -m mce.train --out %s --resume` and the same options",
                        self.step,
                        self.checkpoint_path,
                        "python" if self.ranks is None else "the same torchrun ...",
                        run_folder,
                    )
                    raise KeyboardInterrupt
                if self.augment is not None:
                    batch = self.augment(batch)
                logs, stop = self._train_step(batch.to(self.device), interrupt.requested)
                logger.log(self.step, self.epoch, logs)
                bar.set_postfix(loss=f"{logs['loss']:.4f}")
                self.step += 1
                self.batch_in_epoch += 1
            self.epoch += 1
            self.batch_in_epoch = 0
            if not self.per_step_schedule:
                self.scheduler.step()
            if self.validate is not None:
                self._select(logger)
            self.save()
        return True

    def _train_step(self, batch, interrupted: bool = False) -> tuple[dict[str, float], bool]:
        """One optimizer step: the step's logs and whether to stop (``interrupted``; in a
        data-parallel run, on any rank: the logs, the loss and the flags in one all-reduce,
        so that every rank sees the same values and stops at the same step)."""
        with autocast(self.precision, self.device):
            if self.step_module is None:
                result = self.method.step(self.model, batch, self.step)
            else:  # the method's step as the forward of the DistributedDataParallel module
                result = self.step_module(batch, self.step)
        loss = result.loss
        if self.step_module is None:
            logs, stop = result.logs, interrupted
            self._check_finite(loss.item())
        self.optimizer.zero_grad()
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        if self.step_module is not None:  # the gradients are averaged; so are the logs
            logs, mean_loss, stop = _mean_over_ranks(result.logs, loss.item(), interrupted)
            self._check_finite(mean_loss)
        if self.scaler is not None:  # the true gradients, for clipping
            self.scaler.unscale_(self.optimizer)
        if self.hparams.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.hparams.grad_clip)
        if self.scaler is None:
            self.optimizer.step()
        else:  # skipped when the scaled gradients overflowed; the scale then shrinks
            self.scaler.step(self.optimizer)
            self.scaler.update()
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.per_step_schedule:
            self._advance_schedule()
        return logs, stop

    def _advance_schedule(self) -> None:
        """Move a per-step schedule to this step's share of training: epoch + (batch + 1) /
        batches of this epoch, in planned steps. One step per batch of a plain epoch; an
        epoch made longer or shorter by a method's plan moves it by the same share."""
        planned = -(-len(self.train) // self.hparams.batch_size)
        done = self.epoch + (self.batch_in_epoch + 1) / self.batches_this_epoch
        target = round(done * planned)
        total = getattr(self.scheduler, "total_steps", None)
        if total is not None:
            target = min(target, total - 1)
        while self.scheduler.last_epoch < target:
            self.scheduler.step()

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"the {self.method.name} loss became {loss} at step {self.step}; "
                "lower --lr or check the inputs"
            )


class _MethodStep(nn.Module):
    """A method's step as a module's forward. Methods call ``encode``, ``forward_rows`` and
    ``unimodal_outputs`` rather than the model's ``forward``; wrapped in
    DistributedDataParallel, this forward is what prepares the gradient all-reduce of the
    backward that follows, whichever of the model's parts the step used."""

    def __init__(self, model: nn.Module, method: TrainingMethod) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, batch, step: int):
        return self.method.step(self.model, batch, step)


class _NoLogger:
    """What ranks other than 0 log to: nothing."""

    def log(self, step: int, epoch: int, values: dict[str, float]) -> None:
        pass

    def log_validation(
        self, step: int, epoch: int, key: str, scores: Mapping[str, float]
    ) -> None:
        pass

    def close(self) -> None:
        pass


def _validation_scores(value: float | Mapping[str, float]) -> dict[str, float]:
    """What ``validate`` returned as {combination or "average": score}.

    Raises:
        ValueError: a mapping without "average".
    """
    if not isinstance(value, Mapping):
        return {"average": float(value)}
    if "average" not in value:
        raise ValueError(
            f"validate must return a number or a mapping with an 'average', got keys "
            f"{', '.join(map(str, value))}"
        )
    return {str(key): float(score) for key, score in value.items()}


def _rng_states() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """This process's CPU and CUDA random generator states."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def _processes(count: int) -> str:
    return "1 process" if count == 1 else f"{count} processes"


def _mean_over_ranks(
    logs: dict[str, float], loss: float, interrupted: bool
) -> tuple[dict[str, float], float, bool]:
    """The step's logs and loss averaged over the ranks, and whether any rank was interrupted
    (Ctrl-C), from one all-reduce."""
    values = torch.tensor([*logs.values(), loss, float(interrupted)], dtype=torch.float64)
    totals = distributed.sum_across_ranks(values)
    world = distributed.world_size()
    means = [float(total) / world for total in totals.tolist()]
    return dict(zip(logs, means)), means[-2], means[-1] > 0


class _DeferredInterrupt:
    """Turns Ctrl-C into a request honoured between training steps, so the checkpoint written on
    interrupt never holds a half-applied step. A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
