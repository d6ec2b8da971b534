"""The compiled extension is really loaded (CI sets MCE_REQUIRE_EXT=1 so a fallback cannot hide)."""

from __future__ import annotations

import os

import pytest

import mce
from mce.ops import _ext


@pytest.mark.skipif(os.environ.get("MCE_REQUIRE_EXT") != "1", reason="MCE_REQUIRE_EXT is not 1")
def test_cpu_kernels_are_loaded():
    assert mce.has_cpu_kernels(), f"mce._C failed to import: {_ext._cpu_import_error!r}"


@pytest.mark.skipif(
    os.environ.get("MCE_REQUIRE_CUDA_BUILD") != "1",
    reason="MCE_REQUIRE_CUDA_BUILD is not 1: the CUDA module's presence is not required here",
)
def test_cuda_module_was_built():
    assert _ext._cuda_module is not None, (
        f"mce._C_cuda failed to import: {_ext._cuda_import_error!r}"
    )


def test_cuda_request_without_gpu_is_a_clear_error():
    if mce.has_cuda_kernels():
        pytest.skip("a CUDA GPU is present: the no-GPU error path is not reachable")
    with pytest.raises(RuntimeError, match="CUDA"):
        _ext.cuda_kernels()
