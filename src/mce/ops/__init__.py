"""The torch face of the mce kernels, one module per op family.

Each family module holds its ``torch.library.custom_op``, fake kernel, autograd registration
and public function, beside its kernels ``csrc/cpu/<family>.cpp`` / ``csrc/cuda/<family>.cu`` and
its tests ``tests/ops/test_<family>*.py``:

========================  =====================  ==================================
module                    kernels                tests
========================  =====================  ==================================
:mod:`mce.ops.plans`      ``plans``              ``test_plans.py``
:mod:`mce.ops.shapley`    ``shapley``            ``test_shapley_kernel.py``
:mod:`mce.ops.gather`     ``subset_gather``      ``test_subset_gather.py``
:mod:`mce.ops.lce`        ``lce``                ``test_lce_kernel.py``
========================  =====================  ==================================

:mod:`mce.ops._checks` holds the shared argument checks and the one launch helper; it and this
package face (for :func:`has_cpu_kernels`, :func:`has_cuda_kernels`) are the only modules that
import the extension loader :mod:`mce.ops._ext`. Pure-torch twins of every op live in
:mod:`mce.ops.reference`. The ops may import the floor (:mod:`mce.support.bits`), never MCE's
science or the method layer.

Checking policy (the same for the CPU and the CUDA twin of every op): the public functions here
validate their input and raise ``ValueError`` naming the problem before any kernel runs. The one
exception is a per-row fact of a large plan (each row of ``shapley_from_rows``), which the kernel
checks in the very pass that reads the row, so that validation never costs more than the work:
the kernel reports the first bad row and the op raises the same named ``ValueError``. An output
that cannot be allocated (too large for the device's memory) is a ``ValueError`` naming its rows,
shape and bytes, with what to do instead. The kernels assert what they rely on and throw
``std::invalid_argument`` rather than read out of bounds.
Bindings are called by keyword only.

Conventions: ``present`` is an int64 bitmask per sample (bit m set when modality m is present,
M <= 31); ``rows`` is int64 ``[R, 2]`` holding (sample index, subset bitmask), grouped by sample
in increasing sample order, as the plans produce them.
"""

from __future__ import annotations

from mce.ops._ext import has_cpu_kernels, has_cuda_kernels
from mce.ops.gather import subset_gather
from mce.ops.lce import lce_factors
from mce.ops.plans import DEFAULT_MAX_ROWS, exact_plan, exact_plan_size, mc_plan
from mce.ops.shapley import shapley_from_rows
from mce.support.bits import MAX_MODALITIES, popcount

__all__ = [
    "DEFAULT_MAX_ROWS",
    "MAX_MODALITIES",
    "exact_plan",
    "exact_plan_size",
    "has_cpu_kernels",
    "has_cuda_kernels",
    "lce_factors",
    "mc_plan",
    "popcount",
    "shapley_from_rows",
    "subset_gather",
]
