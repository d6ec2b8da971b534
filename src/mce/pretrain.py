"""Unimodal upper bounds U (Eq. 6): frozen single-modality models, trained once and cached."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mce.bits import samples_with_modality
from mce.checkpoint import load_checkpoint, save_atomic
from mce.data.dataset import MultimodalData
from mce.tasks.base import Task

__all__ = ["data_fingerprint", "unimodal_model", "upper_bound_table"]

log = logging.getLogger(__name__)


def unimodal_model(task: Task, modality: str) -> nn.Module:
    """The task's encoder and unimodal head for ``modality``, freshly initialised."""
    model = task.build_model()
    return nn.Sequential(model.encoders[modality], model.heads[modality])


def _train(
    model: nn.Module,
    task: Task,
    inputs: Tensor,
    target: Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    desc: str,
    progress: bool,
) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        order = torch.randperm(inputs.shape[0], generator=generator)
        for first in range(0, inputs.shape[0], batch_size):
            index = order[first : first + batch_size]
            loss = task.loss(model(inputs[index]), target[index]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def data_fingerprint(data: MultimodalData) -> str:
    """A short hash of a split's targets, presence and inputs (part of the cache key)."""
    digest = hashlib.sha1()
    for tensor in (data.target, data.present, *(data.inputs[name] for name in data.modalities)):
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def upper_bound_table(
    task: Task,
    train: MultimodalData,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    setting: str,
    cache_dir: Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Tensor:
    """Tensor[N, M]: the utility of modality m's frozen unimodal model on each training sample
    (0 where m is absent). U_m of a batch is the sum of its column over the batch.

    Each unimodal model is trained on the training samples where its modality is present and
    cached in ``cache_dir`` under the task, modality, missing-rate setting, seed, epochs and a
    fingerprint of the training split; a cached model is reused.
    """
    table = torch.zeros(len(train), train.num_modalities)
    fingerprint = data_fingerprint(train)
    for m, name in enumerate(train.modalities):
        index = samples_with_modality(train.present, m)
        if index.numel() == 0:
            raise ValueError(f"modality {name!r} is absent from every training sample")
        inputs, target = train.inputs[name][index].to(device), train.target[index].to(device)
        torch.manual_seed(seed + m)
        model = unimodal_model(task, name).to(device)
        path = cache_dir / (
            f"{task.name}-{name}-rates{setting}-seed{seed}-epochs{epochs}-data{fingerprint}.pt"
        )
        if path.is_file():
            model.load_state_dict(load_checkpoint(path)["model"])
            log.info("unimodal upper bound for %s: reusing %s", name, path)
        else:
            _train(
                model,
                task,
                inputs,
                target,
                epochs,
                batch_size,
                lr,
                seed + m,
                f"pretrain {name}",
                progress,
            )
            save_atomic({"model": model.state_dict()}, path)
            log.info("unimodal upper bound for %s: trained and cached at %s", name, path)
        model.eval()
        with torch.no_grad():
            utility = torch.cat(
                [
                    task.utility(model(inputs[i : i + 512]), target[i : i + 512])
                    for i in range(0, inputs.shape[0], 512)
                ]
            )
        table[index, m] = utility.cpu()
    return table
