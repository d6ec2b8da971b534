"""`python -m mce.train`: train MCE (and/or the plain baseline) and evaluate every modality
combination. With no arguments: the bundled digits task on the CPU, MCE next to the baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mce.checkpoint import load_checkpoint, save_atomic
from mce.data.dataset import MultimodalData
from mce.data.masks import PRESETS, apply_missing_rates, parse_missing_rates
from mce.evaluate import evaluate_combinations, write_results
from mce.lce import presence_counts
from mce.methods import BaselineMethod, MCEConfig, MCEMethod, TrainingMethod
from mce.pretrain import upper_bound_table
from mce.tasks import TASKS, Task, get_task

log = logging.getLogger("mce.train")

CHECKPOINT = "checkpoint.pt"
_PRESET_HELP = ", ".join(f"{k}={v}" for k, v in PRESETS.items())


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; saved as config.json in the run folder."""

    task: str = "digits"  # task name (see mce.tasks.TASKS)
    data_dir: str | None = None  # data folder of tasks that read files
    missing_rates: str | None = None  # preset a-f or comma-separated rates; None: task default
    method: str = "compare"  # mce, baseline, or compare (both, same data, seed and schedule)
    mce: MCEConfig = MCEConfig()  # MCE switches and lambdas
    epochs: int | None = None  # None: task default
    batch_size: int | None = None
    lr: float | None = None
    pretrain_epochs: int | None = None  # epochs of each unimodal upper-bound model
    seed: int = 0
    device: str = "cpu"
    out: str | None = None  # run folder; None: runs/<task>-<method>-<date>-<time>
    cache_dir: str | None = None  # unimodal models; None: $XDG_CACHE_HOME/mce (~/.cache/mce)
    progress: bool = True


class Trainer:
    """Runs one method to completion with atomic per-epoch checkpoints and exact resume.

    The data order of epoch e is a permutation seeded by (seed, e); the checkpoint holds the
    model, optimizer, scheduler, global RNG state and position (epoch, batch, step), so an
    interrupted run resumed from its checkpoint reproduces the uninterrupted run exactly (CPU).
    """

    def __init__(
        self,
        task: Task,
        method: TrainingMethod,
        train: MultimodalData,
        run_dir: Path,
        *,
        epochs: int,
        batch_size: int,
        lr: float,
        lr_step: int,
        lr_gamma: float,
        seed: int,
        device: torch.device,
        progress: bool = True,
    ) -> None:
        self.task, self.method, self.train, self.run_dir = task, method, train, run_dir
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.device, self.progress = device, progress
        torch.manual_seed(seed)
        self.model = task.build_model().to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, lr_step, lr_gamma)
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def finished(self) -> bool:
        return self.epoch >= self.epochs

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
        }

    def save(self) -> None:
        save_atomic(self.state(), self.checkpoint_path)

    def load(self) -> None:
        state = load_checkpoint(self.checkpoint_path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.epoch, self.batch_in_epoch, self.step = (
            state["epoch"],
            state["batch_in_epoch"],
            state["step"],
        )

    def _order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(len(self.train), generator=generator)

    def fit(self, stop_at_step: int | None = None) -> bool:
        """Train until the last epoch (True) or until ``stop_at_step`` / Ctrl-C (False); both
        leave a checkpoint to resume from."""
        from mce.loggers import RunLogger

        self.run_dir.mkdir(parents=True, exist_ok=True)
        logger = RunLogger(self.run_dir, resume_step=self.step)
        batches_per_epoch = -(-len(self.train) // self.batch_size)
        try:
            with _DeferredInterrupt() as interrupt:
                return self._fit_epochs(logger, batches_per_epoch, stop_at_step, interrupt)
        finally:
            logger.close()

    def _fit_epochs(
        self,
        logger,
        batches_per_epoch: int,
        stop_at_step: int | None,
        interrupt: _DeferredInterrupt,
    ) -> bool:
        while not self.finished:
            self.model.train()
            batches = self.train.batches(
                self.batch_size, self._order(self.epoch), start=self.batch_in_epoch
            )
            bar = tqdm(
                batches,
                total=batches_per_epoch,
                initial=self.batch_in_epoch,
                desc=f"{self.method.name} epoch {self.epoch + 1}/{self.epochs}",
                disable=not self.progress,
                leave=False,
            )
            for batch in bar:
                if stop_at_step is not None and self.step >= stop_at_step:
                    self.save()
                    return False
                if interrupt.requested:
                    self.save()
                    log.warning(
                        "interrupted: checkpoint saved at step %d; rerun with --resume", self.step
                    )
                    raise KeyboardInterrupt
                logs = self._train_step(batch.to(self.device))
                logger.log(self.step, self.epoch, logs)
                bar.set_postfix(loss=f"{logs['loss']:.4f}")
                self.step += 1
                self.batch_in_epoch += 1
            self.epoch += 1
            self.batch_in_epoch = 0
            self.scheduler.step()
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
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        result.logs["lr"] = self.optimizer.param_groups[0]["lr"]
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


def _setting_key(rates: tuple[float, ...]) -> str:
    return "-".join(f"{r:g}" for r in rates)


def run(config: TrainConfig, resume: bool = False, stop_at_step: int | None = None) -> dict:
    """Train and evaluate as configured; returns {method: {combination: score}}."""
    task = get_task(config.task)
    defaults = task.defaults
    epochs = config.epochs if config.epochs is not None else defaults["epochs"]
    batch_size = config.batch_size or defaults["batch_size"]
    lr = config.lr if config.lr is not None else defaults["lr"]
    pretrain_epochs = config.pretrain_epochs or defaults["pretrain_epochs"]
    rates = parse_missing_rates(
        config.missing_rates or defaults["missing_rates"], len(task.modalities)
    )
    device = torch.device(config.device)
    if config.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        config = dataclasses.replace(config, out=f"runs/{task.name}-{config.method}-{stamp}")
    out = Path(config.out)
    if not resume and (out / "config.json").exists():
        raise ValueError(
            f"{out} already holds a run: pass --resume to continue it, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    _check_config_matches(out, config, resume)

    train_full, test = task.load(Path(config.data_dir) if config.data_dir else None)
    masked = apply_missing_rates(train_full, rates, config.seed)
    _save_or_check_masks(out, masked, resume)
    log.info(
        "training split: %d samples, %d dropped (every modality missing); missing rates %s",
        len(masked.data),
        masked.dropped,
        dict(zip(task.modalities, rates)),
    )
    train = masked.data
    methods = ["mce", "baseline"] if config.method == "compare" else [config.method]

    results = {}
    for name in methods:
        if name == "mce":
            upper = None
            if config.mce.use_b:
                upper = upper_bound_table(
                    task,
                    train,
                    epochs=pretrain_epochs,
                    batch_size=batch_size,
                    lr=lr,
                    seed=config.seed,
                    setting=_setting_key(rates),
                    cache_dir=Path(config.cache_dir) if config.cache_dir else _default_cache_dir(),
                    device=device,
                    progress=config.progress,
                )
            method = MCEMethod(
                task,
                config.mce,
                presence_counts(train.present, len(task.modalities)),
                len(train),
                upper,
                config.seed,
            )
        else:
            method = BaselineMethod(task)
        trainer = Trainer(
            task,
            method,
            train,
            out / name,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            lr_step=defaults.get("lr_step", epochs),
            lr_gamma=defaults.get("lr_gamma", 1.0),
            seed=config.seed,
            device=device,
            progress=config.progress,
        )
        if resume and trainer.checkpoint_path.is_file():
            trainer.load()
            log.info("%s: resuming at epoch %d, step %d", name, trainer.epoch, trainer.step)
        if not trainer.fit(stop_at_step=stop_at_step):
            return {}
        results[name] = evaluate_combinations(
            trainer.model, task, test, device=device, progress=config.progress
        )
    table = write_results(out, results, task.metric_name)
    print(
        f"\n{task.name}: {task.metric_name} (%) on every modality combination of the test split "
        f"({len(test)} samples)\n\n{table}\n\nresults in {out}/results.json and results.md"
    )
    return results


def _default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "mce" / "upper_bounds"


def _check_config_matches(out: Path, config: TrainConfig, resume: bool) -> None:
    path = out / "config.json"
    current = dataclasses.asdict(config)
    current.pop("progress")
    if resume and path.is_file():
        saved = json.loads(path.read_text())
        if saved != json.loads(json.dumps(current)):
            raise ValueError(
                f"--resume with settings that differ from the run in {out} "
                f"(see {path}); use the same options or a new --out"
            )
    path.write_text(json.dumps(current, indent=2) + "\n")


def _save_or_check_masks(out: Path, masked, resume: bool) -> None:
    path = out / "masks.pt"
    state = {"present": masked.data.present, "kept": masked.kept, "dropped": masked.dropped}
    if resume and path.is_file():
        saved = load_checkpoint(path)
        if not (
            torch.equal(saved["present"], state["present"])
            and torch.equal(saved["kept"], state["kept"])
        ):
            raise ValueError(f"the missing-modality masks differ from those saved in {path}")
        return
    save_atomic(state, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mce.train",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--task", default="digits", help=f"task: {', '.join(TASKS)}")
    data.add_argument(
        "--data-dir",
        default=None,
        help="data folder (required by tasks that read files; digits is bundled)",
    )
    data.add_argument(
        "--missing-rates",
        default=None,
        help="missing rate per modality in [0, 1), comma-separated in the task's modality "
        f"order, or a 3-modality preset {_PRESET_HELP}; default: the task's",
    )
    method = parser.add_argument_group("method")
    method.add_argument(
        "--method",
        choices=["mce", "baseline", "compare"],
        default="compare",
        help="compare trains MCE and the baseline the same way and reports both",
    )
    method.add_argument(
        "--shapley",
        choices=["exact", "mc", "official"],
        default="exact",
        help="exact Shapley values (Eq. 5), Monte Carlo permutations, or the authors' code's "
        "batch formula (not Eq. 5; for comparison studies)",
    )
    method.add_argument(
        "--mc-k", type=int, default=100, help="permutations per sample for --shapley mc"
    )
    for term, equation in (("single", "9"), ("sub", "11"), ("aux", "13")):
        method.add_argument(
            f"--lambda-{term}", type=float, default=1.0, help=f"weight of L_{term} (Eq. {equation})"
        )
        method.add_argument(
            f"--no-{term}", action="store_true", help=f"drop L_{term} (Table 2 ablation)"
        )
    method.add_argument(
        "--weighting",
        choices=["paper", "official"],
        default="paper",
        help="row averaging of L_sub and L_aux: per subset as Eqs. 11 and 13, or per sample as "
        "the authors' code",
    )
    method.add_argument(
        "--no-a", action="store_true", help="drop factor A (A = 1; Table 2 ablation)"
    )
    method.add_argument(
        "--no-b",
        action="store_true",
        help="drop factor B (B = 1, no Shapley values or unimodal pretraining)",
    )
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=None, help="epochs (default: the task's)")
    optim.add_argument(
        "--batch-size", type=int, default=None, help="batch size (default: the task's)"
    )
    optim.add_argument(
        "--lr", type=float, default=None, help="Adam learning rate (default: the task's)"
    )
    optim.add_argument(
        "--pretrain-epochs",
        type=int,
        default=None,
        help="epochs of each unimodal upper-bound model (default: the task's)",
    )
    optim.add_argument("--seed", type=int, default=0, help="seed of masks, initialisation, order")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    run_group.add_argument(
        "--out",
        default=None,
        help="run folder: config, masks, checkpoints, logs, results; an existing run is only "
        "continued with --resume (default: runs/<task>-<method>-<date>-<time>)",
    )
    run_group.add_argument(
        "--cache-dir",
        default=None,
        help="cache of unimodal upper-bound models, keyed by task, modality, missing rates, "
        "seed, epochs and training data (default: $XDG_CACHE_HOME/mce or ~/.cache/mce)",
    )
    run_group.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    run_group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def parse_config(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    """Parse and validate; bad arguments exit with status 2 and a message naming the problem."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.task not in TASKS:
        parser.error(f"unknown task {args.task!r}; known tasks: {', '.join(TASKS)}")
    task = get_task(args.task)
    try:
        parse_missing_rates(
            args.missing_rates or task.defaults["missing_rates"], len(task.modalities)
        )
    except ValueError as error:
        parser.error(f"--missing-rates: {error}")
    if task.needs_data_dir and args.data_dir is None:
        parser.error(f"--data-dir is required by task {args.task!r}")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a directory")
    if args.data_dir is not None and not task.needs_data_dir:
        parser.error(f"task {args.task!r} uses bundled data and takes no --data-dir")
    for name in ("epochs", "batch_size", "pretrain_epochs", "mc_k"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.lr is not None and not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.resume and args.out is None:
        parser.error("--resume needs --out, the run folder to continue")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} requested but no CUDA GPU is available")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    mce_config = MCEConfig(
        shapley=args.shapley,
        mc_k=args.mc_k,
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
    config = TrainConfig(
        task=args.task,
        data_dir=args.data_dir,
        missing_rates=args.missing_rates,
        method=args.method,
        mce=mce_config,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        pretrain_epochs=args.pretrain_epochs,
        seed=args.seed,
        device=args.device,
        out=args.out,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    return config, args.resume


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, resume = parse_config(argv)
    try:
        run(config, resume=resume)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
