"""RedCore (Sun et al., AAAI 2024) as its released code trains it, on any task's model.

The task's model is adapted once (:func:`adapt_model`): each encoder gets a mean and a
log-variance head (:class:`~mce.nn.redcore.VariationalEncoder`) and the reconstruction module
becomes :class:`~mce.nn.redcore.CrossModalImagination`, which imagines each modality from the
others and imputes absent modalities with their imagined representation (in training and in
evaluation, inside ``forward_rows``). A step's loss is::

    L = L_task + KL + L_single + imagination_weight * sum_m beta_m L_m

- L_task: the task loss of each sample's prediction from its present modalities, the absent
  ones imputed.
- KL = kl_weight * sum_m (sum over the samples with m present of KL(q(z|x_m) || N(0, I))) / B,
  without the usual 1/2, as the released code.
- L_single: sum over m of the mean loss of m's unimodal head over the samples with m present.
- L_m: the squared error between m's imagined and real representation, summed over channels
  (averaged over the positions of dense features), averaged over the samples with m present;
  the target is not detached (as the released code: the encoder is pulled towards what the
  others can imagine).
- beta: per-modality supervision weights updated from the relative advantage of each
  modality's smoothed imagination loss (:class:`SupervisionWeights`), after this step's update.

Where the released code does something unsound, this does the sound thing (see docs/methods.md):
z = mu at evaluation (the released code samples at test time); one modality order for the
imagination inputs and the fusion (the released code's contradict each other); absent
modalities are not encoded (their token is zero, where the released code encodes a zero
input); the unimodal heads see present modalities only (the released code also trains them on
the imagined representation of absent ones); a batch without modality m skips L_m (the
released code divides by zero there).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from mce.data.dataset import Batch
from mce.methods.base import MethodInputs, MethodSpec, StepResult
from mce.nn.model import MultimodalModel, full_rows
from mce.nn.redcore import CrossModalImagination, VariationalEncoder
from mce.science.rce import single_loss
from mce.support.bits import samples_with_modality

__all__ = [
    "RedCoreConfig",
    "SupervisionWeights",
    "RedCoreMethod",
    "adapt_model",
    "released_schedule",
    "SPEC",
]

log = logging.getLogger("mce.train")

SCHEDULES = ("steps", "released")
RELEASED_STEPS = 2_100  # the released code's IEMOCAP run: ~35 batches of 128 x 60 epochs


def _option(default: Any, help: str) -> Any:
    """A field whose ``help`` documents it on the command line too."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RedCoreConfig:
    """RedCore's weights, supervision-weight schedule and imagination networks.

    The defaults are the released code's effective values for IEMOCAP (``train_miss.py``
    overrides some of its script's flags: mse_weight 0.15, ii 3, beta 0.7, eta 0.1). A task may
    give its own defaults (``Task.method_options["redcore"]``).

    Raises:
        ValueError: a weight, rate or step size that is negative, not finite or not a number;
            ``loss_ema`` outside (0, 1]; a non-positive count; empty ``imagination_hidden``.
    """

    kl_weight: float = _option(0.0008, "weight of the KL term (the released code's lambda1)")
    imagination_weight: float = _option(
        0.15, "weight of the beta-weighted imagination losses (the released code's mse_weight)"
    )
    loss_ema: float = _option(
        0.7, "weight of the new batch in the smoothed imagination losses (the code's loss_beta)"
    )
    beta_every: int = _option(
        3, "steps between supervision-weight updates (the released code's ii)"
    )
    eta: float = _option(0.1, "initial step size of the supervision-weight update")
    eta_growth: float = _option(1.5, "factor eta grows by every eta_growth_every steps")
    eta_growth_every: int = _option(
        500, "steps between growths of eta (the first at step 0, as the released code)"
    )
    beta_floor: float = _option(0.1, "floor of each supervision weight before normalisation")
    imagination_hidden: tuple[int, ...] = field(
        default=(256, 128, 64),
        metadata={
            "help": "widths of each imagination block's encoder (the code's AE_layers)",
            "items": "widths",
        },
    )
    imagination_blocks: int = _option(5, "residual blocks of each imagination network")
    schedule: Literal["steps", "released"] = _option(
        "steps",
        "steps: beta_every, loss_ema and eta_growth_every as given, per step; released: "
        "those three carried over from the released run (batch 128, about 2,100 steps) to this "
        "run's batch size and length (tasks training at batch 1 use it)",
    )
    initial_log_var: float = _option(
        -6.0,
        "log sigma^2 of the variational encoders' noise at initialisation (0: sigma 1, as the "
        "released code's initialisation; see docs/methods.md)",
    )

    def __post_init__(self) -> None:
        for name in ("kl_weight", "imagination_weight", "eta", "beta_floor"):
            _check_number(name, getattr(self, name), minimum=0.0)
        _check_number("eta_growth", self.eta_growth, minimum=0.0, strict=True)
        _check_number("loss_ema", self.loss_ema, minimum=0.0, strict=True)
        if self.loss_ema > 1:
            raise ValueError(f"loss_ema must be in (0, 1], got {self.loss_ema!r}")
        _check_number("initial_log_var", self.initial_log_var, minimum=-math.inf)
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        for name in ("beta_every", "eta_growth_every", "imagination_blocks"):
            _check_count(name, getattr(self, name))
        hidden = self.imagination_hidden
        if isinstance(hidden, str) or not isinstance(hidden, Sequence) or not hidden:
            raise ValueError(
                f"imagination_hidden must be a non-empty sequence of widths, got {hidden!r}"
            )
        for width in hidden:
            _check_count("imagination_hidden", width)
        object.__setattr__(self, "imagination_hidden", tuple(hidden))


def released_schedule(config: RedCoreConfig, batch_size: int, steps: int) -> RedCoreConfig:
    """``config`` with the supervision-weight schedule of the released IEMOCAP run (batches of
    128, about 2,100 steps) carried over to a run of ``steps`` steps of ``batch_size`` samples:

    - ``beta_every`` = 384 / batch_size steps (at least 1): an update every 384 samples, as
      every 3 batches of 128;
    - ``loss_ema`` = 1 - 0.3^(batch_size / 128): the last 128 samples weigh 0.7 together in the
      smoothed losses, as one batch of 128 does;
    - ``eta_growth_every`` = 500 / 2,100 of the run's steps (at least 1): eta grows about 5 times
      in all, as over the released run.

    At batch 128 over 2,100 steps these are the released values.

    Example:
        >>> released_schedule(RedCoreConfig(), batch_size=1, steps=87_600).eta_growth_every
        20857
    """
    _check_count("batch_size", batch_size)
    _check_count("steps", steps)
    return dataclasses.replace(
        config,
        beta_every=max(1, round(3 * 128 / batch_size)),
        loss_ema=round(1 - 0.3 ** (batch_size / 128), 4),
        eta_growth_every=max(1, round(500 * steps / RELEASED_STEPS)),
    )


def _check_number(name: str, value: Any, minimum: float, strict: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < minimum
        or (strict and value == minimum)
    ):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class SupervisionWeights:
    """The released code's per-modality supervision weights beta and their update.

    State: beta (starts at 1 each, unnormalised), the smoothed imagination losses (start at 0),
    the step size eta and the iteration (start at 0). :meth:`update`, once per training step:

    1. smoothed_m <- (1 - loss_ema) smoothed_m + loss_ema u_m, with u_m the batch's L_m, or
       smoothed_m itself when no sample of the batch has m;
    2. relative advantage ra_m = (mean - smoothed_m) / mean, mean over the modalities (0 when
       the mean is 0);
    3. eta <- eta * eta_growth when iteration % eta_growth_every == 0 (at iteration 0 too);
    4. when iteration % beta_every == 0: beta <- beta - eta ra, each beta_m floored at
       beta_floor, then beta <- beta / ||beta||_2;
    5. iteration += 1.

    A modality that is easier to imagine than the average (ra > 0) loses weight. The smoothed
    losses are detached floats (the released code keeps them as tensors whose graph grows
    with every step, though no gradient reaches beta).

    Example:
        >>> weights = SupervisionWeights(2, RedCoreConfig())
        >>> weights.update([1.0, 3.0])  # eta 0.15; ra = (0.5, -0.5); beta = (0.925, 1.075)
        [0.6522..., 0.7580...]
    """

    def __init__(self, num_modalities: int, config: RedCoreConfig) -> None:
        self.config = config
        self.beta = [1.0] * num_modalities
        self.smoothed = [0.0] * num_modalities
        self.eta = config.eta
        self.iteration = 0

    def update(self, losses: Sequence[float | None]) -> list[float]:
        """One step's update from the batch's imagination losses (None: no sample has that
        modality); returns beta after the update."""
        cfg = self.config
        if len(losses) != len(self.beta):
            raise ValueError(f"{len(self.beta)} losses expected, got {len(losses)}")
        for m, loss in enumerate(losses):
            new = self.smoothed[m] if loss is None else float(loss)
            self.smoothed[m] = (1 - cfg.loss_ema) * self.smoothed[m] + cfg.loss_ema * new
        mean = sum(self.smoothed) / len(self.smoothed)
        advantage = [(mean - s) / mean if mean > 0 else 0.0 for s in self.smoothed]
        if self.iteration % cfg.eta_growth_every == 0:
            self.eta *= cfg.eta_growth
        if self.iteration % cfg.beta_every == 0:
            floored = [max(cfg.beta_floor, b - self.eta * a) for b, a in zip(self.beta, advantage)]
            norm = math.sqrt(sum(b * b for b in floored))
            self.beta = [b / norm for b in floored]
        self.iteration += 1
        return list(self.beta)

    def state_dict(self) -> dict[str, Any]:
        return {
            "beta": list(self.beta),
            "smoothed": list(self.smoothed),
            "eta": self.eta,
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values.

        Raises:
            ValueError: the state is for another number of modalities.
        """
        if len(state["beta"]) != len(self.beta) or len(state["smoothed"]) != len(self.beta):
            raise ValueError(
                f"supervision weights of {len(state['beta'])} modalities cannot be loaded "
                f"into {len(self.beta)}"
            )
        self.beta = [float(b) for b in state["beta"]]
        self.smoothed = [float(s) for s in state["smoothed"]]
        self.eta, self.iteration = float(state["eta"]), int(state["iteration"])


def adapt_model(model: MultimodalModel, options: RedCoreConfig | None) -> MultimodalModel:
    """The task's model made RedCore's, in place: variational encoders and cross-modal
    imagination in place of the reconstruction module (plain and dense models alike).

    Args:
        model: a freshly built task model (its reconstruction module, if any, is dropped).
        options: the imagination networks' sizes and the encoders' initial noise; None:
            :class:`RedCoreConfig` defaults.

    Returns:
        ``model``, adapted.

    Raises:
        ValueError: fewer than 2 modalities, or a model adapted already.
    """
    config = RedCoreConfig() if options is None else options
    if any(isinstance(encoder, VariationalEncoder) for encoder in model.encoders.values()):
        raise ValueError("the model's encoders are variational already (adapted twice?)")
    for name in model.modalities:
        model.encoders[name] = VariationalEncoder(
            model.encoders[name], model.dim, config.initial_log_var
        )
    model.reconstruction = CrossModalImagination(
        model.num_modalities,
        model.dim,
        hidden=config.imagination_hidden,
        blocks=config.imagination_blocks,
    )
    return model


def _parts(model: MultimodalModel) -> tuple[list[VariationalEncoder], CrossModalImagination]:
    encoders = [model.encoders[name] for name in model.modalities]
    imagination = model.reconstruction
    if not all(isinstance(e, VariationalEncoder) for e in encoders) or not isinstance(
        imagination, CrossModalImagination
    ):
        raise ValueError(
            "the redcore method needs a model built by mce.methods.redcore.adapt_model "
            "(variational encoders, cross-modal imagination)"
        )
    return encoders, imagination  # type: ignore[return-value]


class RedCoreMethod:
    """The RedCore objective (see the module doc) on a model made by :func:`adapt_model`.

    Args:
        inputs: what the trainer hands a method; only ``inputs.loss`` is used.
        config: weights and schedule; default :class:`RedCoreConfig`.

    Example:
        >>> model = adapt_model(task.build_model(), RedCoreConfig())
        >>> result = RedCoreMethod(inputs).step(model, batch, step=0)
    """

    name = "redcore"

    def __init__(self, inputs: MethodInputs, config: RedCoreConfig | None = None) -> None:
        config = RedCoreConfig() if config is None else config
        if config.schedule == "released":
            if not (inputs.batch_size and inputs.steps):
                raise ValueError(
                    "schedule='released' needs the run's batch size and steps in MethodInputs"
                )
            config = released_schedule(config, inputs.batch_size, inputs.steps)
            log.info(
                "redcore: the released schedule carried over to batch %d and %d steps: beta "
                "every %d steps, loss_ema %g, eta grows every %d steps",
                inputs.batch_size,
                inputs.steps,
                config.beta_every,
                config.loss_ema,
                config.eta_growth_every,
            )
        self.config = config
        self.loss_fn, self.inputs = inputs.loss, inputs
        self.weights = SupervisionWeights(int(inputs.counts.shape[0]), self.config)

    def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult:
        cfg, present = self.config, batch.present
        encoders, imagination = _parts(model)
        for encoder in encoders:
            encoder.last_kl = None
        h = model.encode(batch.inputs, present, batch.lengths, batch.context)
        num_samples = present.shape[0]
        indices = [samples_with_modality(present, m) for m in range(model.num_modalities)]

        kl = torch.zeros((), device=present.device)
        for encoder, index in zip(encoders, indices):
            if index.numel():
                assert encoder.last_kl is not None and encoder.last_kl.shape[0] == index.numel()
                kl = kl + encoder.last_kl.sum()

        _, outputs = model.forward_rows(h, full_rows(present))  # absent modalities imagined
        task_losses = self.loss_fn(outputs, batch.target)

        features = model.feature_tokens(h)  # (N, M, C P)
        positions = features.shape[2] // imagination.channels
        errors: list[Tensor | None] = []  # per modality: the squared errors of its samples
        for m, index in enumerate(indices):
            if not index.numel():
                errors.append(None)
                continue
            real = features[index]
            imagined = imagination.imagine_features(real, m)
            errors.append((imagined - real[:, m]).pow(2).sum(1) / positions)

        # the batch's sizes and imagination error sums over the ranks (one all-reduce, the
        # identity in one process): every rank updates beta alike, and each loss below is this
        # rank's sum over the global batch's count, times the number of ranks
        world = self.inputs.world_size
        sizes = [num_samples] + [index.numel() for index in indices]
        local = torch.tensor(sizes, dtype=torch.float64, device=present.device)
        sums = [local.new_zeros(()) if e is None else e.detach().double().sum() for e in errors]
        stats = self.inputs.sum_over_ranks(torch.cat([local, torch.stack(sums)])).tolist()
        total, counts, error_sums = stats[0], stats[1 : len(sizes)], stats[len(sizes) :]
        beta = self.weights.update([None if c == 0 else e / c for c, e in zip(counts, error_sums)])

        l_task = world * task_losses.sum() / total
        kl = world * cfg.kl_weight * kl / total
        imagine = [
            None if c == 0 else (kl.new_zeros(()) if e is None else e.sum()) * world / c
            for c, e in zip(counts, errors)
        ]
        l_imagine = sum(
            (b * loss for b, loss in zip(beta, imagine) if loss is not None), kl.new_zeros(())
        )

        ones = torch.ones(model.num_modalities, device=present.device)
        unimodal = model.unimodal_outputs(h, present)
        global_counts = torch.tensor(counts, device=present.device).clamp(min=1)
        l_single = world * single_loss(unimodal, batch.target, self.loss_fn, ones, global_counts)
        loss = l_task + kl + l_single + cfg.imagination_weight * l_imagine

        logs = {"l_task": l_task.item(), "kl": kl.item(), "l_single": l_single.item()}
        logs["l_imagine"] = l_imagine.item()
        for m, name in enumerate(model.modalities):
            logs[f"beta/{name}"] = beta[m]  # the same on every rank
            loss_m = imagine[m]  # a loss term: world_size x this rank's share
            logs[f"L_imagine/{name}"] = float("nan") if loss_m is None else loss_m.item()
        logs["eta"] = self.weights.eta
        logs["loss"] = loss.item()
        return StepResult(loss, logs)

    def state_dict(self) -> dict[str, Any]:
        """The supervision weights' state (beta, smoothed losses, eta, iteration)."""
        return {"supervision_weights": self.weights.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights.load_state_dict(state["supervision_weights"])


def _build(inputs: MethodInputs, options: Any) -> RedCoreMethod:
    if options is not None and not isinstance(options, RedCoreConfig):
        raise TypeError(f"redcore options must be a RedCoreConfig, got {type(options).__name__}")
    return RedCoreMethod(inputs, options)


SPEC = MethodSpec(
    name="redcore",
    summary="RedCore (Sun et al., AAAI 2024): variational encoders, cross-modal imagination of "
    "missing modalities, supervision weights from the relative advantage",
    options=RedCoreConfig,
    build=_build,
    needs_upper_bounds=lambda options: False,
    adapt_model=adapt_model,
)
