"""Shared fixtures: devices (cpu, and cuda when present), fresh seeds, poisoned outputs."""

from __future__ import annotations

import csv
import os
import random

import pytest
import torch

import mce
from mce.ops import _checks

CUDA_PRESENT = torch.cuda.is_available() and mce.has_cuda_kernels()
CUDA_SKIP_REASON = "no CUDA GPU present (or mce built without CUDA kernels): CUDA test not run"

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA_PRESENT, reason=CUDA_SKIP_REASON)],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def one_thread():
    """One torch thread for the test: some multi-threaded CPU kernels (3-D convolutions) sum in a
    thread-dependent order, so bitwise reproducibility across runs holds with one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_csv(path) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts."""
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def validation_column(path, key: str) -> list[float]:
    """The per-epoch validation values ``key`` (e.g. ``validation/accuracy``) of a log.csv."""
    return [float(row[key]) for row in read_csv(path) if row.get(key)]


@pytest.fixture
def seed() -> int:
    """A fresh seed per test (or MCE_TEST_SEED); printed so that a failure can be replayed."""
    value = int(os.environ.get("MCE_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"seed = {value} (replay with MCE_TEST_SEED={value})")
    return value


def _poisoned(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.full(shape, -777_777, dtype=dtype, device=device)


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernel outputs start as NaN / -777777, so an element a kernel forgets to write shows."""
    monkeypatch.setattr(_checks, "new_output", _poisoned)


@pytest.fixture(autouse=True)
def private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unimodal upper-bound models are cached under a per-session temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
