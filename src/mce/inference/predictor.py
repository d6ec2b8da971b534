"""Inference on a trained run: load its model, predict from any subset of modalities, and
attribute each prediction to the modalities (per-sample Shapley values, Eq. 5).

    predictor = mce.load("runs/digits-compare-...")            # the MCE model of the run
    result = predictor.predict({"image": images}, attribution=True)
    result.prediction, result.scores, result.shapley

Dense tasks predict maps: BraTS per-voxel class scores over whole volumes (the task's sliding
window over the model), nuScenes per-cell vehicle scores (with each sample's ``context``).

The weights are read from ``<run>/<method>/model.safetensors`` (:func:`save_model`) when
present, else from the method's training checkpoint ``<run>/<method>/checkpoint.pt`` (its
selected best epoch when it holds one).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from mce.data.absent import presence_from_inputs
from mce.data.dataset import MultimodalData
from mce.methods import get_method
from mce.nn.model import MultimodalModel, full_rows, run_encoder
from mce.science.shapley import coalition_plan, plan_shapley
from mce.support.bits import presence_matrix, present_masks
from mce.support.checkpoint import load_checkpoint
from mce.tasks import TASKS, Task, get_task
from mce.tasks.base import classification_loss, classification_utility
from mce.training.records import (  # save_model: its import path before it moved to the record
    CONFIG,
    WEIGHTS,
    config_from_dict,
    read_config,
    save_model,
)

if TYPE_CHECKING:
    from mce.tasks.brats.segmentation import SlidingWindow

__all__ = ["Prediction", "Predictor", "load", "save_model", "WEIGHTS"]

CHECKPOINT = "checkpoint.pt"
COMPARE = ("mce", "baseline")  # what a run with method "compare" trains


@dataclass(frozen=True)
class Prediction:
    """What :meth:`Predictor.predict` returns (CPU tensors, one row per sample).

    Attributes:
        outputs: Tensor[N, ...] the model's outputs from each sample's present modalities
            (a sliding-window task: the softmax averaged over the windows, as ``scores``).
        prediction: Tensor[N] int64 predicted class (classification); a dense task's map,
            int64: Tensor[N, D, H, W] argmax class of each voxel, or Tensor[N, H, W] 0/1 of each
            cell of a one-logit output (sigmoid > 0.5); None otherwise.
        scores: Tensor[N, C] softmax probability of each class (classification); a dense
            task's Tensor[N, K, ...] softmax over K classes, or sigmoid of a one-logit output;
            None otherwise.
        present: Tensor[N] int64 presence bitmasks used (bit m: modality m).
        shapley: Tensor[N, M] Shapley value of each modality for the predicted class's
            probability (NaN for absent modalities); None without attribution.
    """

    outputs: Tensor
    prediction: Tensor | None
    scores: Tensor | None
    present: Tensor
    shapley: Tensor | None = None


class Predictor:
    """A trained model, ready to predict from any subset of its modalities.

    Args:
        model: the trained model (the method's own, e.g. RedCore's adapted one).
        task: the task it was trained on (its modalities, loss and utility).
        method: the method that trained it.
    """

    def __init__(self, model: MultimodalModel, task: Task, method: str) -> None:
        self.model = model.eval()
        self.task = task
        self.method = method
        self._fitting: set[tuple[Any, ...]] = set()  # (modality, input shape, dtype, device)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.model.modalities)

    @property
    def is_classification(self) -> bool:
        """Whether the task is a classification (cross-entropy loss or accuracy utility)."""
        return (
            self.task.loss is classification_loss or self.task.utility is classification_utility
        )

    @property
    def is_dense(self) -> bool:
        """Whether the model predicts maps (a segmentation: per voxel or per BEV cell)."""
        from mce.nn.dense import DenseMultimodalModel

        return isinstance(self.model, DenseMultimodalModel)

    @property
    def window(self) -> SlidingWindow | None:
        """The task's sliding window over whole volumes (BraTS), else None."""
        from mce.tasks.brats.segmentation import SlidingWindow

        window = getattr(self.task.evaluator, "window", None)
        return window if isinstance(window, SlidingWindow) else None

    @torch.no_grad()
    def predict(
        self,
        inputs: Mapping[str, Tensor | np.ndarray],
        present: Tensor | np.ndarray | None = None,
        *,
        lengths: Mapping[str, Tensor | np.ndarray] | None = None,
        context: Mapping[str, Tensor | np.ndarray] | None = None,
        batch_size: int = 256,
        attribution: bool = False,
        shapley: Literal["exact", "mc"] = "exact",
        mc_k: int = 100,
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> Prediction:
        """Predict every sample from its present modalities.

        Args:
            inputs: modality name -> Tensor/array [N, ...]; absent modalities may be omitted,
                or given as rows that are all NaN (such a sample lacks that modality).
            present: which modalities each sample has: bool/0-1 [N, M] or int bitmasks [N]
                (bit m: ``modalities[m]``); None: those given in ``inputs`` without NaN rows.
                Inputs of modalities marked absent are ignored.
            lengths: name -> int [N] valid frames of a padded sequence modality [N, T, ...]
                (frames past a length are ignored and may hold NaN).
            context: key -> Tensor/array [N, ...] side data of the samples that encoders
                read (nuScenes: the camera calibrations, ``MultimodalData.context``).
            batch_size: samples per forward (a sliding-window task runs one sample at a
                time).
            attribution: also compute each sample's Shapley values of its present modalities
                for the predicted class's probability (classification only).
            shapley: "exact" (every subset, Eq. 5) or "mc" (``mc_k`` permutations per sample,
                seeded by ``seed``).
            device: where the model runs (it is moved there; default: where its weights
                are).

        Raises:
            ValueError: an unknown modality, inputs of the wrong shape (naming the modality),
                a sample with no modality (naming its index), NaN in a present input, context
                of the wrong number of samples, or attribution for a task that is not a
                classification (dense tasks included).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if shapley not in ("exact", "mc"):
            raise ValueError(f"shapley must be 'exact' or 'mc', got {shapley!r}")
        if attribution and self.is_dense:
            raise ValueError(
                f"attribution is not available for task {self.task.name!r}: its outputs are "
                "dense maps; predict without attribution"
            )
        if attribution and not self.is_classification:
            raise ValueError(
                f"attribution needs a classification task; task {self.task.name!r} is not one"
            )
        if device is None:
            device = _model_device(self.model)
        else:
            device = torch.device(device)
            self.model.to(device)
        tensors, present, lengths = self._prepared(inputs, present, lengths)
        extra = self._context(context, present.shape[0])
        window = self.window
        if window is not None:
            return self._predict_volumes(window, tensors, set(inputs), present, device)
        self._check_encoders(tensors, present, lengths, extra, device)
        parts: list[Prediction] = []
        for first in range(0, present.shape[0], batch_size):
            rows = slice(first, first + batch_size)
            batch = {name: value[rows].to(device) for name, value in tensors.items()}
            part = {name: value[rows].to(device) for name, value in lengths.items()}
            sides = {key: value[rows].to(device) for key, value in extra.items()}
            parts.append(
                self._predict_batch(
                    batch, present[rows].to(device), part, sides, attribution, shapley, mc_k, seed
                )
            )
        return _concatenated(parts, present)

    def _context(
        self, context: Mapping[str, Tensor | np.ndarray] | None, num_samples: int
    ) -> dict[str, Tensor]:
        """The samples' context as tensors, one row per sample, checked."""
        checked = {}
        for key, value in (context or {}).items():
            value = _as_tensor(value, f"context {key!r}")
            if value.dim() < 1 or value.shape[0] != num_samples:
                raise ValueError(
                    f"context {key!r} has shape {list(value.shape)}; expected [N, ...] with "
                    f"N = {num_samples} samples"
                )
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"context {key!r} holds NaN or infinite values")
            checked[key] = value
        return checked

    def _predict_volumes(
        self,
        window: SlidingWindow,
        tensors: dict[str, Tensor],
        given: set[str],
        present: Tensor,
        device: torch.device,
    ) -> Prediction:
        """Whole volumes [N, 1, D, H, W] per modality, one sample at a time through the
        task's sliding window, each from its present set (the window and forward of
        :func:`mce.tasks.brats.segmentation.evaluate_segmentation` for that combination)."""
        from mce.tasks.brats.segmentation import _combinations_predictor, _stack

        shapes = {name: tuple(tensors[name].shape) for name in self.modalities if name in given}
        shape = next(iter(shapes.values()))
        for name, other in shapes.items():
            if len(other) != 5 or other[1] != 1:
                raise ValueError(
                    f"modality {name!r} has shape {list(other)}; expected whole volumes "
                    "[N, 1, D, H, W]"
                )
            if other != shape:
                raise ValueError(
                    f"modality {name!r} has shape {list(other)}, unlike {list(shape)} of "
                    f"{next(iter(shapes))!r}: every modality needs volumes of one shape"
                )
        volumes = {
            name: tensors[name] if name in given else torch.zeros(shape)
            for name in self.modalities
        }
        scores = []
        for n in range(present.shape[0]):
            x = _stack({name: value[n : n + 1] for name, value in volumes.items()}, self.modalities)
            mask = present[n : n + 1].to(device)
            predictor = _combinations_predictor(self.model, mask, [int(mask[0])])
            try:
                scores.append(window(predictor, x.to(device)).float().cpu())
            except RuntimeError as error:
                raise ValueError(
                    f"sample {n}: volumes of shape {list(shape)} do not fit the model "
                    f"({str(error).splitlines()[0]})"
                ) from error
        probabilities = torch.cat(scores)
        return Prediction(probabilities, probabilities.argmax(dim=1), probabilities, present.cpu())

    def _prepared(
        self,
        inputs: Mapping[str, Tensor | np.ndarray],
        present: Tensor | np.ndarray | None,
        lengths: Mapping[str, Tensor | np.ndarray] | None,
    ) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        """Inputs as float tensors with absent and NaN rows zeroed, the presence bitmasks,
        and the lengths; every modality of the model is in the inputs (zeros where absent)."""
        modalities = self.modalities
        unknown = sorted(set(inputs) - set(modalities))
        if unknown:
            raise ValueError(
                f"unknown modality {', '.join(map(repr, unknown))}; the model's modalities: "
                f"{', '.join(modalities)}"
            )
        if not inputs:
            raise ValueError(f"no inputs given; the model's modalities: {', '.join(modalities)}")
        tensors = {name: _as_tensor(value, f"modality {name!r}") for name, value in inputs.items()}
        for name, value in tensors.items():
            if value.dim() < 2:
                raise ValueError(
                    f"modality {name!r} has shape {list(value.shape)}; expected [N, ...] with "
                    "N samples in its first dimension"
                )
        sizes = {name: value.shape[0] for name, value in tensors.items()}
        if len(set(sizes.values())) != 1:
            listed = ", ".join(f"{name} {size}" for name, size in sizes.items())
            raise ValueError(f"the modalities have different numbers of samples: {listed}")
        num_samples = next(iter(sizes.values()))
        if num_samples == 0:
            raise ValueError("the inputs hold no samples")
        lengths = self._lengths(lengths, tensors, num_samples)
        stated = None
        if present is not None:
            stated = presence_matrix(self._present(present, num_samples), len(modalities))
        # the one rule for absent modalities (mce.data.absent): entirely NaN or infinite rows
        matrix = presence_from_inputs(tensors, modalities, stated, lengths)
        present = present_masks(matrix)
        for name in lengths:  # frames past a sample's length do not count
            value = tensors[name]
            valid = torch.arange(value.shape[1]) < lengths[name][:, None]
            valid = valid.view(*valid.shape, *([1] * (value.dim() - 2)))
            tensors[name] = torch.where(valid, value, torch.zeros((), dtype=value.dtype))
        for m, name in enumerate(modalities):
            if name not in tensors:
                continue
            value, has = tensors[name], matrix[:, m]
            keep = has.view(-1, *([1] * (value.dim() - 1)))
            tensors[name] = torch.where(keep, value, torch.zeros((), dtype=value.dtype))
            if name in lengths:
                lengths[name] = torch.where(has, lengths[name], torch.zeros_like(lengths[name]))
        for name in modalities:  # absent everywhere: zeros the encoder never sees
            if name not in tensors:
                tensors[name] = torch.zeros(num_samples, 1)
        return tensors, present, lengths

    def _lengths(
        self,
        lengths: Mapping[str, Tensor | np.ndarray] | None,
        tensors: Mapping[str, Tensor],
        num_samples: int,
    ) -> dict[str, Tensor]:
        checked = {}
        for name, value in (lengths or {}).items():
            if name not in tensors:
                raise ValueError(f"lengths given for {name!r}, which has no inputs")
            value = _as_tensor(value, f"lengths of {name!r}")
            if value.is_floating_point() or value.dtype == torch.bool:
                raise ValueError(f"lengths of modality {name!r} must be integers")
            if tuple(value.shape) != (num_samples,):
                raise ValueError(
                    f"lengths of modality {name!r} must have shape [{num_samples}], got "
                    f"{list(value.shape)}"
                )
            frames = tensors[name].shape[1]
            if bool(((value < 0) | (value > frames)).any()):
                raise ValueError(f"lengths of modality {name!r} must lie in [0, {frames}]")
            checked[name] = value.long()
        return checked

    def _present(self, present: Tensor | np.ndarray, num_samples: int) -> Tensor:
        """Bitmasks [N] from bool/0-1 [N, M] or int bitmasks [N], checked."""
        value = _as_tensor(present, "present")
        num_modalities = len(self.modalities)
        if value.dim() == 2:
            if tuple(value.shape) != (num_samples, num_modalities):
                raise ValueError(
                    f"present must have shape [N, M] = [{num_samples}, {num_modalities}], got "
                    f"{list(value.shape)}"
                )
            if not bool(((value == 0) | (value == 1)).all()):
                raise ValueError("present must hold only booleans or 0/1")
            return present_masks(value.bool())
        if value.dim() != 1 or value.is_floating_point() or value.dtype == torch.bool:
            raise ValueError(
                f"present must be bool [N, M] or integer bitmasks [N], got {value.dtype} of "
                f"shape {list(value.shape)}"
            )
        if value.shape[0] != num_samples:
            raise ValueError(f"present has {value.shape[0]} samples, the inputs {num_samples}")
        value = value.long()
        if bool(((value < 0) | (value >= 1 << num_modalities)).any()):
            raise ValueError(f"present bitmasks must lie in [0, {(1 << num_modalities) - 1}]")
        return value

    def _check_encoders(
        self,
        tensors: Mapping[str, Tensor],
        present: Tensor,
        lengths: Mapping[str, Tensor],
        context: Mapping[str, Tensor],
        device: torch.device,
    ) -> None:
        """Run each modality's encoder on its first present sample, so that an input of the
        wrong shape is an error naming the modality; once per input shape of a modality."""
        matrix = presence_matrix(present, len(self.modalities))
        for m, name in enumerate(self.modalities):
            rows = torch.nonzero(matrix[:, m]).flatten()[:1]
            if not rows.numel():
                continue
            key = getattr(self.model.encoders[name], "context_key", None)
            if key is not None and key not in context:
                raise ValueError(
                    f"modality {name!r} needs the samples' context {key!r} (give context=...)"
                )
            fitting = (name, tuple(tensors[name].shape[1:]), tensors[name].dtype, device)
            if fitting in self._fitting:
                continue
            x = tensors[name][rows].to(device)
            part = lengths[name][rows].to(device) if name in lengths else None
            sides = {key: value[rows].to(device) for key, value in context.items()}
            try:
                features = run_encoder(self.model.encoders[name], x, part, sides)
            except (RuntimeError, ValueError, IndexError, TypeError) as error:
                shape = list(tensors[name].shape)
                raise ValueError(
                    f"modality {name!r}: inputs of shape {shape} do not fit its encoder "
                    f"({str(error).splitlines()[0]})"
                ) from error
            wrong_features = isinstance(features, Tensor) and (
                tuple(features.shape) != (1, self.model.dim)
            )
            if wrong_features and not self.is_dense:  # dense: maps shaped by the inputs
                raise ValueError(
                    f"modality {name!r}: inputs of shape {list(tensors[name].shape)} do not fit "
                    "its encoder (wrong feature shape)"
                )
            self._fitting.add(fitting)

    def _predict_batch(
        self,
        inputs: dict[str, Tensor],
        present: Tensor,
        lengths: dict[str, Tensor],
        context: dict[str, Tensor],
        attribution: bool,
        shapley: Literal["exact", "mc"],
        mc_k: int,
        seed: int,
    ) -> Prediction:
        """One batch: encode once, then one forward over the rows (n, A_n), or over the
        coalition plan's rows with attribution."""
        h = self.model.encode(inputs, present, lengths, context)
        if not attribution:
            outputs = self.model.forward_rows(h, full_rows(present))[1]
            return self._result(outputs, present)
        plan = coalition_plan(present, self.model.num_modalities, method=shapley, k=mc_k, seed=seed)
        row_outputs = self.model.forward_rows(h, plan.rows)[1]
        samples, subsets = plan.rows[:, 0], plan.rows[:, 1]
        full = subsets == present[samples]  # one row (n, A_n) per sample, in sample order
        outputs = row_outputs[full]
        if outputs.shape[0] != present.shape[0]:
            raise AssertionError("every coalition plan holds each sample's full set once")
        predicted = outputs.argmax(dim=-1)
        probability = torch.softmax(row_outputs.float(), dim=-1)
        v = probability.gather(1, predicted[samples][:, None]).squeeze(1)
        phi = plan_shapley(plan, v).to(outputs.device)
        matrix = presence_matrix(present, self.model.num_modalities)
        phi = torch.where(matrix, phi, torch.full_like(phi, math.nan))
        return dataclasses.replace(self._result(outputs, present), shapley=phi)

    def _result(self, outputs: Tensor, present: Tensor) -> Prediction:
        outputs = outputs.float()
        if self.is_dense:
            if outputs.shape[1] == 1:  # one logit per cell: sigmoid > 0.5
                scores, labels = torch.sigmoid(outputs), (outputs[:, 0] > 0).long()
            else:
                scores, labels = torch.softmax(outputs, dim=1), outputs.argmax(dim=1)
            return Prediction(outputs.cpu(), labels.cpu(), scores.cpu(), present.cpu())
        if not self.is_classification:
            return Prediction(outputs.cpu(), None, None, present.cpu())
        scores = torch.softmax(outputs, dim=-1)
        return Prediction(outputs.cpu(), outputs.argmax(dim=-1).cpu(), scores.cpu(), present.cpu())

    def predict_data(self, data: MultimodalData, **options: Any) -> Prediction:
        """:meth:`predict` on a split (its inputs, presence, sequence lengths and context),
        batch by batch; ``options`` as for :meth:`predict`."""
        if tuple(data.modalities) != self.modalities:
            raise ValueError(
                f"the data's modalities {list(data.modalities)} are not the model's "
                f"{list(self.modalities)}"
            )
        batch_size = options.pop("batch_size", 256)
        parts = []
        for batch in data.batches(batch_size):
            parts.append(
                self.predict(
                    batch.inputs,
                    batch.present,
                    lengths=batch.lengths,
                    context=batch.context,
                    batch_size=batch_size,
                    **options,
                )
            )
        return _concatenated(parts, data.present)


def load(
    run_dir: str | Path,
    method: str | None = None,
    *,
    task: Task | None = None,
    device: str | torch.device = "cpu",
) -> Predictor:
    """The trained model of a run folder, as a :class:`Predictor`.

    Args:
        run_dir: the run folder (``config.json`` and one folder per trained method).
        method: which trained method's model; default: the only one trained, or "mce" when
            the run trained several.
        task: the ``Task`` object of a run trained with ``run(..., task=...)`` (default: the
            task named in ``config.json``); the run's task options are applied to it.
        device: where the model is put.

    Raises:
        ValueError: no run in the folder, a task that cannot be found by the name it
            recorded (saying how to name it), an unknown or untrained method (listing those
            trained), or weights that do not fit the task's model.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise ValueError(f"{run_dir} holds no run (no {CONFIG})")
    config = read_config(run_dir)
    trained = _trained_methods(run_dir, config)
    if method is None:
        if len(trained) == 1:
            method = trained[0]
        elif "mce" in trained:
            method = "mce"
        else:
            raise ValueError(
                f"{run_dir} holds no trained model (no {WEIGHTS} or {CHECKPOINT} in a method's "
                "folder)"
                if not trained
                else f"{run_dir} holds several trained methods; choose one of: "
                + ", ".join(trained)
            )
    elif method not in trained:
        choices = ", ".join(trained) or "none"
        raise ValueError(f"method {method!r} has no trained model in {run_dir}; trained: {choices}")
    options = config.get("task_options") or {}
    task = _recorded_task(run_dir, config["task"]) if task is None else task
    task = task.with_options(options)
    model = task.build_model()
    spec = get_method(method)
    if spec.adapt_model is not None:
        model = spec.adapt_model(model, _method_options(spec, task, config))
    state = _weights(run_dir / method)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"the weights in {run_dir / method} do not fit task {task.name!r}'s model for "
            f"{method}: {str(error).splitlines()[0]}"
        ) from error
    return Predictor(model.to(device), task, method)


def _recorded_task(run_dir: Path, name: str) -> Task:
    """The task a run's ``config.json`` names, or an error saying how to name it."""
    how = (
        f"name it: `python -m mce.predict {run_dir} --task package.module:ATTRIBUTE ...` (the "
        "module defining the Task, importable), or mce.load(run, task=...)"
    )
    if ":" not in name and name not in TASKS:
        raise ValueError(f"{run_dir} was trained on task {name!r}, not a built-in task: {how}")
    try:
        return get_task(name)
    except ValueError as error:
        if ":" not in name:
            raise
        raise ValueError(f"{error}; put its module on PYTHONPATH, or {how}") from error


def _trained_methods(run_dir: Path, config: dict[str, Any]) -> list[str]:
    """The methods of the run with weights in their folder, in the run's order."""
    name = config.get("method", "compare")
    names = list(COMPARE) if name == "compare" else [name]
    names += sorted(
        path.parent.name for path in run_dir.glob(f"*/{WEIGHTS}") if path.parent.name not in names
    )
    return [
        name
        for name in names
        if (run_dir / name / WEIGHTS).is_file() or (run_dir / name / CHECKPOINT).is_file()
    ]


def _method_options(spec: Any, task: Task, config: dict[str, Any]) -> Any:
    """The method's options as the run recorded them (else the task's defaults)."""
    recorded = config_from_dict(config).method_options.get(spec.name)
    return task.options_for_method(spec.name) if recorded is None else recorded


def _weights(folder: Path) -> dict[str, Tensor]:
    """The state dict in ``model.safetensors``, else the checkpoint's (its best state when
    it holds one)."""
    path = folder / WEIGHTS
    if path.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(f"{path} is corrupt or not a safetensors file ({error})") from error
    state = load_checkpoint(folder / CHECKPOINT)
    best = state.get("best")
    if isinstance(best, dict) and best.get("model") is not None:
        return best["model"]
    if "model" not in state:
        raise ValueError(f"{folder / CHECKPOINT} holds no model state")
    return state["model"]


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _as_tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, Tensor):
        tensor = value.detach()
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{what} is not an array ({error})") from error
    return tensor.float() if tensor.is_floating_point() else tensor


def _concatenated(parts: list[Prediction], present: Tensor) -> Prediction:
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> Tensor | None:
        values = [getattr(part, name) for part in parts]
        return None if values[0] is None else torch.cat(values)

    return Prediction(
        cat("outputs"), cat("prediction"), cat("scores"), present.cpu(), cat("shapley")
    )

