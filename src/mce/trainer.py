"""The training loop: one method, atomic per-epoch checkpoints, exact resume, deferred Ctrl-C."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from mce.checkpoint import load_checkpoint, save_atomic
from mce.config import HyperParameters
from mce.data.dataset import MultimodalData
from mce.loggers import RunLogger
from mce.methods import StatefulMethod, TrainingMethod

__all__ = ["Trainer", "build_optimizer", "CHECKPOINT"]

log = logging.getLogger("mce.train")

CHECKPOINT = "checkpoint.pt"


PER_STEP_SCHEDULES = ("onecycle",)  # stepped after every optimizer step, not every epoch


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


class Trainer:
    """Runs one method to completion with atomic per-epoch checkpoints and exact resume.

    The data order of epoch e is a permutation seeded by (seed, e); the checkpoint holds the
    model, optimizer, scheduler, the CPU and CUDA RNG states, the position (epoch, batch,
    step) and the method's own state (a :class:`~mce.methods.StatefulMethod`'s), so an
    interrupted run resumed from its checkpoint reproduces the uninterrupted run exactly on the
    CPU (with one thread where multi-threaded kernels sum in varying order), and up to the GPU
    kernels' own nondeterminism on a GPU.

    With ``validate``, the model is scored after every epoch (logged as ``validation/<name>``
    in ``log.csv`` and TensorBoard, on the epoch's last step) and the state of the best epoch
    (the first to reach the highest score) is kept, in the checkpoint too; when training ends
    the model holds that best state (:attr:`best_epoch`, :attr:`best_score`). Without it the
    model is the last epoch's.

    Args:
        build_model: () -> a fresh model (called after seeding).
        method: the training objective.
        train: the (masked) training split.
        run_dir: folder of this method's checkpoint and logs.
        hparams: epochs, batch size, optimizer, schedule, gradient clipping.
        seed: initialisation and data order.
        device: where the model and batches live.
        progress: show progress bars.
        validate: model -> validation score (higher is better), called after every epoch to
            select the epoch; None: the last epoch's model is the result.
        validation_name: what ``validate`` measures, for the logs.
        augment: (inputs, target) -> transformed (inputs, target), applied to every training
            batch before it moves to ``device`` (e.g. the task's random crops); None: none.
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
        augment: Callable[..., tuple[dict[str, torch.Tensor], torch.Tensor]] | None = None,
    ) -> None:
        self.augment = augment
        self.method, self.train, self.run_dir, self.hparams = method, train, run_dir, hparams
        self.seed, self.device, self.progress = seed, device, progress
        self.validate, self.validation_key = validate, f"validation/{validation_name}"
        # the selected epoch (1-based), its validation score and model state (on the CPU)
        self.best_epoch: int | None = None
        self.best_score: float | None = None
        self.best_model: dict[str, torch.Tensor] | None = None
        torch.manual_seed(seed)
        self.model = build_model().to(device)
        self.optimizer, self.scheduler = build_optimizer(
            self.model.parameters(), hparams, steps_per_epoch=-(-len(train) // hparams.batch_size)
        )
        self.per_step_schedule = hparams.lr_schedule in PER_STEP_SCHEDULES
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def finished(self) -> bool:
        return self.epoch >= self.hparams.epochs

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            # dropout on a GPU draws from the CUDA generators
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "best": None
            if self.best_model is None
            else {"model": self.best_model, "score": self.best_score, "epoch": self.best_epoch},
            # the method's own state across steps (RedCore's supervision weights), if any
            "method": self.method.state_dict() if isinstance(self.method, StatefulMethod) else None,
        }

    def save(self) -> None:
        save_atomic(self.state(), self.checkpoint_path)

    def load(self) -> None:
        """Restore the checkpoint's state.

        Raises:
            ValueError: the method keeps state across steps and the checkpoint holds none.
        """
        state = load_checkpoint(self.checkpoint_path)
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
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch, self.batch_in_epoch, self.step = (
            state["epoch"],
            state["batch_in_epoch"],
            state["step"],
        )
        best = state.get("best")
        if best is not None:
            self.best_model, self.best_score, self.best_epoch = (
                best["model"],
                best["score"],
                best["epoch"],
            )

    def _order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(len(self.train), generator=generator)

    def fit(self, stop_at_step: int | None = None) -> bool:
        """Train until the last epoch (True) or until ``stop_at_step`` / Ctrl-C (False); both
        leave a checkpoint to resume from. With ``validate``, a finished run leaves the best
        epoch's state in the model (the checkpoint keeps the last epoch's beside it)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        extra = (self.validation_key,) if self.validate is not None else ()
        logger = RunLogger(self.run_dir, resume_step=self.step, extra_fields=extra)
        try:
            with _DeferredInterrupt() as interrupt:
                finished = self._fit_epochs(logger, stop_at_step, interrupt)
        finally:
            logger.close()
        if finished and self.validate is not None and self.best_model is not None:
            self.model.load_state_dict(self.best_model)
        return finished

    def _select(self, logger: RunLogger) -> None:
        """Score the epoch just finished on the validation split; keep its state if best."""
        score = float(self.validate(self.model))
        logger.log(self.step - 1, self.epoch - 1, {self.validation_key: score})
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_epoch = score, self.epoch
            self.best_model = {
                key: value.detach().to("cpu", copy=True)
                for key, value in self.model.state_dict().items()
            }

    def _fit_epochs(
        self, logger: RunLogger, stop_at_step: int | None, interrupt: _DeferredInterrupt
    ) -> bool:
        batch_size, epochs = self.hparams.batch_size, self.hparams.epochs
        batches_per_epoch = -(-len(self.train) // batch_size)
        while not self.finished:
            self.model.train()
            batches = self.train.batches(
                batch_size, self._order(self.epoch), start=self.batch_in_epoch
            )
            bar = tqdm(
                batches,
                total=batches_per_epoch,
                initial=self.batch_in_epoch,
                desc=f"{self.method.name} epoch {self.epoch + 1}/{epochs}",
                disable=not self.progress,
                leave=False,
            )
            for batch in bar:
                if stop_at_step is not None and self.step >= stop_at_step:
                    self.save()
                    return False
                if interrupt.requested:
                    self.save()
                    run_folder = self.run_dir.parent
                    log.warning(
                        "interrupted: checkpoint saved at step %d in %s; continue with "
                        "`python -m mce.train --out %s --resume` and the same options",
                        self.step,
                        self.checkpoint_path,
                        run_folder,
                    )
                    raise KeyboardInterrupt
                if self.augment is not None:
                    inputs, target = self.augment(batch.inputs, batch.target)
                    batch = dataclasses.replace(batch, inputs=inputs, target=target)
                logs = self._train_step(batch.to(self.device))
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

    def _train_step(self, batch) -> dict[str, float]:
        result = self.method.step(self.model, batch, self.step)
        if not torch.isfinite(result.loss):
            raise FloatingPointError(
                f"the {self.method.name} loss became {result.loss.item()} at step {self.step}; "
                "lower --lr or check the inputs"
            )
        self.optimizer.zero_grad()
        result.loss.backward()
        if self.hparams.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.hparams.grad_clip)
        self.optimizer.step()
        result.logs["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.per_step_schedule:
            self.scheduler.step()
        return result.logs


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
