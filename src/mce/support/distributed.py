"""Data-parallel runs: processes launched by ``torchrun``, one process group, rank helpers.

``torchrun --nproc-per-node N -m mce.train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`init` joins them into one process group (NCCL
when the run's device is CUDA, each rank on ``cuda:LOCAL_RANK``; gloo on the CPU). Without
those variables nothing here starts anything: every helper is the identity of a single
process (:func:`sum_across_ranks` returns its argument, :func:`shard` the whole split,
:func:`ranks` None), so a plain ``python -m mce.train`` runs exactly as it always has.

Conventions of a data-parallel run (see docs/distributed.md):

- Rank 0 does every file operation (run folder, checkpoints, logs, results, the upper-bound
  cache); the other ranks receive what they need from it (:func:`on_main`), so no shared
  file system is needed beyond each node's copy of the data.
- A collective (every function here but the queries) must be called by every rank, in the
  same order.
- Ranks wait for one another up to ``MCE_DIST_TIMEOUT_MINUTES`` minutes (default 60): e.g.
  while rank 0 trains the unimodal upper-bound models. Raise it for long pretraining.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

if TYPE_CHECKING:
    from mce.data.dataset import MultimodalData

__all__ = [
    "TIMEOUT_ENV",
    "Ranks",
    "launched",
    "init",
    "shutdown",
    "is_active",
    "rank",
    "world_size",
    "is_main",
    "ranks",
    "backend",
    "sum_across_ranks",
    "broadcast_object",
    "gather_objects",
    "on_main",
    "broadcast_buffers",
    "shard",
    "check_batches",
    "data_parallel",
]

TIMEOUT_ENV = "MCE_DIST_TIMEOUT_MINUTES"
"""Environment variable: minutes a rank waits for the others in a collective (default 60)."""

_T = TypeVar("_T")
_started_here = False  # whether init created the process group (shutdown destroys only that)


@dataclass(frozen=True)
class Ranks:
    """The ranks of a data-parallel run, as a training method sees them.

    Attributes:
        rank: this process's rank, 0 .. world_size - 1.
        world_size: number of processes, each holding one slice of every global batch.
    """

    rank: int
    world_size: int

    def sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over the ranks (:func:`sum_across_ranks`)."""
        return sum_across_ranks(tensor)


def launched() -> bool:
    """Whether this process is one of several started by torchrun (``RANK`` set and
    ``WORLD_SIZE`` above 1; a world of one runs as a plain process)."""
    if "RANK" not in os.environ:
        return False
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise ValueError(
            f"WORLD_SIZE must be a whole number, got {os.environ['WORLD_SIZE']!r}"
        ) from None


def _timeout() -> datetime.timedelta:
    value = os.environ.get(TIMEOUT_ENV, "60")
    try:
        minutes = float(value)
    except ValueError:
        minutes = -1.0
    if not minutes > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of minutes, got {value!r}")
    return datetime.timedelta(minutes=minutes)


def init(device: str | torch.device) -> torch.device:
    """Join the torchrun process group (once) and return this rank's device.

    Outside torchrun: nothing is started and ``device`` is returned as given. Under torchrun
    with a CUDA device each rank uses ``cuda:LOCAL_RANK`` and the group NCCL; otherwise gloo.

    Raises:
        ValueError: ``device`` names one GPU (``cuda:1``) under torchrun, ``LOCAL_RANK`` has no
            GPU on this node, or :data:`TIMEOUT_ENV` is not a positive number.
    """
    global _started_here
    device = torch.device(device)
    if not launched():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(
                f"--device {device} names one GPU, but under torchrun every rank uses "
                "cuda:LOCAL_RANK: pass --device cuda"
            )
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local} has no GPU: this node has {torch.cuda.device_count()}; "
                "start at most that many processes per node (--nproc-per-node)"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=_timeout())
        _started_here = True
    return device


def shutdown() -> None:
    """Destroy the process group that :func:`init` created (no-op otherwise)."""
    global _started_here
    if _started_here and dist.is_initialized():
        dist.destroy_process_group()
    _started_here = False


def is_active() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    """The number of ranks (1 in a single process)."""
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes files (True in a single process)."""
    return rank() == 0


def ranks() -> Ranks | None:
    """This process's :class:`Ranks` in a data-parallel run; None in a single process."""
    return Ranks(rank(), world_size()) if is_active() else None


def backend() -> str | None:
    """The process group's backend ("nccl", "gloo"), or None in a single process."""
    return str(dist.get_backend()) if is_active() else None


def _transport(tensor: Tensor) -> Tensor:
    """A copy of ``tensor`` on the device the backend communicates from (NCCL: this rank's
    GPU; gloo: the CPU)."""
    if backend() == "nccl":
        return tensor.to(torch.device("cuda", torch.cuda.current_device()), copy=True)
    return tensor.to("cpu", copy=True)


def sum_across_ranks(tensor: Tensor) -> Tensor:
    """``tensor`` summed element-wise over the ranks (all-reduce), on ``tensor``'s device and
    without gradient; ``tensor`` itself, unchanged, in a single process.

    Every rank must call it with a tensor of the same shape and dtype. Use float64 for sums
    that should not depend on how the batch was split (sums of float32 values, counts).

    Example:
        >>> totals = sum_across_ranks(torch.stack([losses.sum(), losses.new_tensor(n)]))
    """
    if not is_active():
        return tensor
    buffer = _transport(tensor.detach())
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.to(tensor.device)


def broadcast_object(value: _T, src: int = 0) -> _T:
    """Rank ``src``'s ``value`` on every rank (picklable; tensors in it should be on the CPU).
    The value itself in a single process."""
    if not is_active():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def gather_objects(value: _T) -> list[_T]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` in a single process)."""
    if not is_active():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def on_main(function: Callable[[], _T]) -> _T:
    """``function()`` run on rank 0 only; its result, or the exception it raised, reaches
    every rank (the exception is raised on every rank, so all stop together with the same
    message). In a single process: ``function()``.

    The result must be picklable, with tensors on the CPU.
    """
    if not is_active():
        return function()
    result: Any = None
    error: Exception | None = None
    if is_main():
        try:
            result = function()
        except Exception as caught:  # noqa: BLE001 - re-raised below, on every rank
            error = caught
    result, error = broadcast_object((result, error))
    if error is not None:
        raise error
    return result


def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (e.g. batch-norm running statistics, which each rank updates from
    its own slice) to every rank, so that evaluation and checkpoints see one model. As
    DistributedDataParallel does at the start of every forward. No-op in a single process."""
    if not is_active():
        return
    for buffer in module.buffers():
        copy = _transport(buffer.detach())
        dist.broadcast(copy, src=0)
        buffer.data.copy_(copy)


def shard(data: MultimodalData) -> MultimodalData:
    """This rank's contiguous share of ``data`` for evaluation (``torch.tensor_split`` of the
    sample order: the first ``len % world_size`` ranks hold one sample more, a rank may hold
    none); ``data`` itself in a single process. Concatenating the shards in rank order gives
    ``data``."""
    if not is_active():
        return data
    index = torch.arange(len(data)).tensor_split(world_size())[rank()]
    return data.subset(index)


def check_batches(num_samples: int, batch_size: int, world: int) -> None:
    """Refuse a batch size that would leave a rank without a sample in some training batch.

    The batch size is the global batch; each is split into ``world`` slices, and every rank
    needs at least one sample a step (models are not required to accept empty batches).

    Raises:
        ValueError: ``batch_size < world``, or the last batch of an epoch (``num_samples mod
            batch_size`` samples) is not empty but smaller than ``world``; the message
            suggests the nearest batch size that works.
    """
    if world <= 1:
        return
    if batch_size < world:
        raise ValueError(
            f"--batch-size {batch_size} is smaller than the {world} ranks: the batch size is "
            f"the global batch, split over the ranks, and every rank needs a sample of every "
            f"batch; use --batch-size {world} or more"
        )
    last = num_samples % batch_size
    if 0 < last < world:
        candidates = [
            size
            for size in range(world, max(num_samples, world) + 1)
            if size <= num_samples and not 0 < num_samples % size < world
        ]
        nearest = min(candidates, key=lambda size: (abs(size - batch_size), size), default=None)
        advice = f", e.g. {nearest}" if nearest is not None else ""
        raise ValueError(
            f"the training split's {num_samples} samples leave a last batch of {last} "
            f"sample(s) every epoch at --batch-size {batch_size}, fewer than the {world} "
            f"ranks (every rank needs a sample of every batch); choose another --batch-size"
            f"{advice}"
        )


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel: calling it prepares the gradient
    all-reduce (average over the ranks) of the backward that follows.

    On GPUs, batch norm layers become ``SyncBatchNorm`` (statistics of the global batch; on
    the CPU, gloo has no such layer and each rank normalises its own slice).
    ``find_unused_parameters``: a rank's slice may lack a modality, and then that modality's
    encoder and head take no part in its step (their gradients from the other ranks are
    still averaged in; a parameter no rank used keeps no gradient, as in a single process).
    """
    if device.type == "cuda":  # batch norm over the global batch, not each rank's slice
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return nn.parallel.DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
    )
