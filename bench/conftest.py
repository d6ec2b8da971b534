"""Benchmark fixtures: one CPU thread (the goals are per core), CUDA-synchronising timer."""

from __future__ import annotations

import pytest
import torch

import mce

CUDA_PRESENT = torch.cuda.is_available() and mce.has_cuda_kernels()
NO_CUDA = "no CUDA GPU present (or mce built without CUDA kernels): GPU variant not measured"


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(1)


@pytest.fixture
def run(benchmark):
    """benchmark(fn) that waits for the GPU inside the timed region."""

    def timed(fn, *args):
        def call():
            out = fn(*args)
            if CUDA_PRESENT:
                torch.cuda.synchronize()
            return out

        return benchmark(call)

    return timed
