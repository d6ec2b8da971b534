"""Argument checks shared by the op families, and the one helper that launches a kernel.

Every check raises ``ValueError`` naming the argument, what was expected and what was received.
With the face of :mod:`mce.ops` it is the only module that imports :mod:`mce.ops._ext`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mce.ops import _ext
from mce.support.bits import MAX_MODALITIES

FLOAT_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
"""Floating dtypes of feature tensors and their codes in ``csrc/include/mce/half.h``."""


def check_tensor(name: str, value: object, dtypes: Sequence[torch.dtype], ndim: int) -> Tensor:
    """A contiguous cpu/cuda tensor of one of ``dtypes`` with ``ndim`` dimensions."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in dtypes:
        expected = " or ".join(str(d) for d in dtypes)
        raise ValueError(f"{name} must have dtype {expected}, got {value.dtype}")
    if value.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {list(value.shape)}")
    if not value.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous() first)")
    if value.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} is on {value.device}; mce kernels run on cpu or cuda only")
    return value


def check_same_device(reference_name: str, reference: Tensor, **others: Tensor | None) -> None:
    for name, other in others.items():
        if other is not None and other.device != reference.device:
            raise ValueError(
                f"{name} is on {other.device} but {reference_name} is on {reference.device}"
            )


def check_num_modalities(num_modalities: int) -> None:
    if isinstance(num_modalities, bool) or not isinstance(num_modalities, int):
        raise ValueError(f"num_modalities must be an int, got {type(num_modalities).__name__}")
    if not 1 <= num_modalities <= MAX_MODALITIES:
        raise ValueError(f"num_modalities must be in [1, {MAX_MODALITIES}], got {num_modalities}")


def first(flags: Tensor) -> int:
    """Index of the first True in a 1-D boolean tensor (callers know there is one)."""
    return int(torch.nonzero(flags)[0, 0])


def check_present_values(present: Tensor, num_modalities: int) -> None:
    """Every sample has at least one modality and no bit at or above num_modalities."""
    if present.numel() == 0:
        return
    low, high = torch.aminmax(present)  # one pass on the common, valid path
    if int(low) >= 1 and int(high) < (1 << num_modalities):
        return
    empty = present == 0
    out_of_range = (present < 0) | (present >= (1 << num_modalities))
    flags = torch.stack([empty.any(), out_of_range.any()]).tolist()
    if flags[0]:
        n = first(empty)
        raise ValueError(
            f"present[{n}] is 0: sample {n} has no modality present; drop samples with "
            "every modality missing before planning"
        )
    if flags[1]:
        n = first(out_of_range)
        raise ValueError(
            f"present[{n}] = {int(present[n])} sets bits outside the "
            f"{num_modalities} modalities (valid masks are 1 .. {(1 << num_modalities) - 1})"
        )


def check_rows_values(rows: Tensor, present: Tensor) -> None:
    """Rows are grouped by sample in increasing order and hold non-empty subsets of present."""
    if rows.shape[0] == 0:
        return
    samples, subsets = rows[:, 0], rows[:, 1]
    num_samples = present.shape[0]
    bad_sample = (samples < 0) | (samples >= num_samples)
    if bool(bad_sample.any()):
        r = first(bad_sample)
        raise ValueError(f"rows[{r}] names sample {int(samples[r])}, outside [0, {num_samples})")
    unsorted = samples[1:] < samples[:-1]
    not_subset = (subsets <= 0) | ((subsets & ~present[samples]) != 0)
    flags = torch.stack([unsorted.any(), not_subset.any()]).tolist()
    if flags[0]:
        r = first(unsorted) + 1
        raise ValueError(
            f"rows must be grouped by sample in increasing order; rows[{r}] names sample "
            f"{int(samples[r])} after sample {int(samples[r - 1])}"
        )
    if flags[1]:
        r = first(not_subset)
        raise ValueError(
            f"rows[{r}] holds subset {int(subsets[r])}, which is empty or not a subset "
            f"of present[{int(samples[r])}] = {int(present[samples[r]])}"
        )


def exclusive_cumsum(counts: Tensor) -> Tensor:
    """offsets[0] = 0, offsets[i + 1] = counts[0] + ... + counts[i] (int64)."""
    offsets = torch.zeros(counts.shape[0] + 1, dtype=torch.int64, device=counts.device)
    torch.cumsum(counts, dim=0, out=offsets[1:])
    return offsets


def new_output(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Uninitialised output buffer; every kernel writes each element it returns.

    Tests replace this function with one returning poisoned buffers (``tests/conftest.py``).
    """
    return torch.empty(shape, dtype=dtype, device=device)


def allocate(
    what: str,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    advice: str = "",
) -> Tensor:
    """:func:`new_output`, with an allocation that fails (more than the device's memory, or a
    byte count that overflows) raised as a ``ValueError`` naming ``what``, its shape and bytes.

    Args:
        what: the buffer, e.g. ``"the exact plan of 1024 rows"``.
        advice: what the caller can do about it, appended to the message.
    """
    try:
        return new_output(shape, dtype, device)
    except RuntimeError as error:  # torch.OutOfMemoryError is one
        nbytes = math.prod(shape) * dtype.itemsize
        advice = f"; {advice}" if advice else ""
        raise ValueError(
            f"{what}: a Tensor{list(shape)} {dtype} of {nbytes} bytes could not be allocated "
            f"on {device}{advice}"
        ) from error


def ptr(tensor: Tensor | None) -> int:
    """Address of a tensor's data for a kernel argument; 0 (nullptr) for None."""
    return 0 if tensor is None else tensor.data_ptr()


def launch(kernel: str, device: torch.device, **args: int) -> None:
    """Run ``kernel`` of the CPU extension with keyword ``args``, or of the CUDA extension on the
    current stream of ``device`` (the CUDA twins take the same arguments plus ``stream``)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device).cuda_stream
            getattr(_ext.cuda_kernels(), kernel)(**args, stream=stream)
    else:
        getattr(_ext.cpu_kernels(), kernel)(**args)
