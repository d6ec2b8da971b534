"""The raw-pointer bindings take named arguments: a misspelt or swapped name is a TypeError."""

from __future__ import annotations

import pytest

from mce.ops import _ext

try:
    from mce import _C_cuda
except ImportError as error:  # built without CUDA: only the CPU module is checked
    _C_cuda = None
    CUDA_MODULE_MISSING = f"mce._C_cuda is not importable ({error})"
else:
    CUDA_MODULE_MISSING = ""

MODULES = [
    pytest.param("cpu", id="_C"),
    pytest.param(
        "cuda",
        id="_C_cuda",
        marks=pytest.mark.skipif(_C_cuda is None, reason=CUDA_MODULE_MISSING or "unused"),
    ),
]

ENTRY_POINTS = [
    "exact_plan",
    "mc_plan_prepare",
    "mc_plan_emit",
    "row_offsets",
    "shapley_from_rows",
    "subset_gather",
    "subset_gather_backward",
    "lce_factors",
]


def _module(kind: str):
    return _ext.cpu_kernels() if kind == "cpu" else _C_cuda


@pytest.mark.parametrize("kind", MODULES)
def test_wrong_keyword_is_a_type_error(kind):
    module = _module(kind)
    stream = {"stream": 0} if kind == "cuda" else {}
    # num_row (misspelt num_rows): rejected before any pointer is touched.
    with pytest.raises(TypeError, match="incompatible function arguments"):
        module.row_offsets(rows=0, num_row=0, num_samples=0, row_offsets=0, **stream)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        module.shapley_from_rows(
            rows=0,
            v=0,
            coef=0,
            present=0,
            offsets=0,
            num_rows=0,
            num_samples=0,
            num_modalities=1,
            phi=0,
            first_bad_row=0,
            **stream,
        )


@pytest.mark.parametrize("kind", MODULES)
@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_argument_is_named(kind, name):
    signature = getattr(_module(kind), name).__doc__.splitlines()[0]
    assert "arg0" not in signature, f"{name} has an unnamed argument: {signature}"
    assert ("stream:" in signature) == (kind == "cuda"), signature
