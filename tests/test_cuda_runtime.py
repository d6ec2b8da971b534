"""Where torch sees a GPU, the mce CUDA kernels load and run; the Monte Carlo plan survives a GPU
that is nearly full.

Without a GPU these tests skip with the reason, unless ``MCE_REQUIRE_CUDA=1`` (set by
``bench/device_check.sh``), which makes a missing GPU a failure too. Where torch sees a GPU, a
CUDA module that failed to import, or that cannot start on this driver, is always a failure.

Run as a script (``python tests/test_cuda_runtime.py --headroom-mib 256``), this file is the
probe that the pressure test starts in a fresh process: it fills the GPU up to the headroom with
torch allocations, runs ``mce.ops.mc_plan`` on CUDA for the first time in that process, times its
launches and compares the plan with the CPU plan. It prints one JSON line.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import subprocess
import sys
import time

import pytest
import torch

import mce
from mce import ops
from mce.ops import _ext

pytestmark = pytest.mark.cuda

REQUIRED_DRIVER = (
    "the statically linked CUDA 13 runtime needs an NVIDIA driver of the R580 branch or newer "
    "(>= 580, CUDA 13.x minor-version compatibility; see docs/building.md, 'GPU')"
)

# The Monte Carlo plan of the pressure probe: moderate, two radix passes (M > 8), a few MB.
PROBE_SAMPLES, PROBE_MODALITIES, PROBE_PERMUTATIONS, PROBE_SEED = 2048, 12, 64, 20251117
PRESSURE_HEADROOM_MIB = 256
PROBE_TIMEOUT_S = 100  # under the device check's 120 s per test


def _require_cuda() -> bool:
    return os.environ.get("MCE_REQUIRE_CUDA") == "1"


def driver_description() -> str:
    """The CUDA version the installed driver supports, read from libcuda (no GPU needed)."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError as error:
        return f"no NVIDIA driver library (libcuda.so.1): {error}"
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return "libcuda.so.1 is present but cuDriverGetVersion failed"
    major, minor = version.value // 1000, (version.value % 1000) // 10
    verdict = "new enough" if major >= 13 else "TOO OLD for the CUDA 13 runtime"
    return f"the driver supports CUDA {major}.{minor} ({verdict})"


def _gpu_or_skip() -> None:
    if torch.cuda.is_available():
        return
    reason = (
        f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no CUDA GPU; "
        f"{driver_description()}"
    )
    if _require_cuda():
        pytest.fail(f"no GPU visible, and MCE_REQUIRE_CUDA=1 makes that a failure: {reason}")
    pytest.skip(f"no CUDA GPU visible: CUDA runtime checks not run ({reason})")


def _gpu_name() -> str:
    properties = torch.cuda.get_device_properties(0)
    return f"{properties.name} (sm_{properties.major}{properties.minor})"


def test_cuda_kernels_load_where_torch_sees_a_gpu():
    _gpu_or_skip()
    assert _ext._cuda_module is not None, (
        f"torch sees {_gpu_name()} but mce._C_cuda failed to import: "
        f"{_ext._cuda_import_error!r}. Was mce built with nvcc on the PATH (the build log says "
        f"'mce: building CUDA kernels for ...')? Note: {REQUIRED_DRIVER}; here "
        f"{driver_description()}."
    )
    assert mce.has_cuda_kernels(), (
        f"torch sees {_gpu_name()} but mce._C_cuda's runtime finds no CUDA device "
        f"(cudaGetDeviceCount failed): {REQUIRED_DRIVER}; here {driver_description()}."
    )


def test_a_kernel_runs_on_the_gpu():
    """One launch end to end: a missing kernel image for this GPU's architecture shows here."""
    _gpu_or_skip()
    if not mce.has_cuda_kernels():
        pytest.fail("the mce CUDA kernels are not available (see the test above)")
    present = torch.tensor([0b1, 0b101, 0b111, 0b110], dtype=torch.int64)
    expected = ops.exact_plan(present, 3)
    try:
        rows = ops.exact_plan(present.cuda(), 3)
        torch.cuda.synchronize()
    except RuntimeError as error:
        raise AssertionError(
            f"exact_plan failed on {_gpu_name()}: {error}. 'no kernel image' means the build's "
            "CMAKE_CUDA_ARCHITECTURES do not cover this GPU (docs/building.md, 'Building with "
            "or without CUDA')"
        ) from error
    assert torch.equal(rows.cpu(), expected)


def test_mc_plan_on_a_nearly_full_gpu():
    """The plan kernel's per-thread stack (256 bytes) makes the driver reserve local memory at
    its first launch; with only ~256 MiB free that reservation must still succeed, and the plan must equal
    the CPU plan. Run in a fresh process, so that no earlier launch has reserved it already."""
    _gpu_or_skip()
    if not mce.has_cuda_kernels():
        pytest.fail("the mce CUDA kernels are not available (see the first test of this file)")
    report = run_probe(PRESSURE_HEADROOM_MIB)
    print(json.dumps(report))
    assert report.get("ok"), (
        f"mc_plan failed on CUDA with {report.get('free_mib_at_launch')} MiB free: "
        f"{report.get('error')}. The Monte Carlo plan kernel keeps a 16-entry int64 radix "
        "histogram per thread (a 256-byte stack frame), for which the driver reserves local "
        "memory for every thread the GPU can hold at the first launch: move that histogram to "
        "shared memory. "
        f"Probe report: {report}"
    )
    assert report["identical"], f"CUDA and CPU plans differ under memory pressure: {report}"
    assert report["fill_reached"], (
        f"the probe could not fill the GPU to {PRESSURE_HEADROOM_MIB} MiB free "
        f"({report.get('free_mib_at_launch')} MiB were free at the launch): {report}"
    )


def run_probe(headroom_mib: int) -> dict:
    """Runs this file as a script in a fresh process and returns its JSON report."""
    command = [sys.executable, os.path.abspath(__file__), "--headroom-mib", str(headroom_mib)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        return {"ok": False, "error": f"probe timed out after {PROBE_TIMEOUT_S} s: {error}"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {
            "ok": False,
            "error": f"probe exited {done.returncode} without a report; stderr: "
            f"{done.stderr[-2000:]}",
        }
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------------
# The probe (fresh process)
# --------------------------------------------------------------------------------------------

MIB = 1 << 20


def _probe_present() -> torch.Tensor:
    generator = torch.Generator().manual_seed(PROBE_SEED)
    presence = torch.rand(PROBE_SAMPLES, PROBE_MODALITIES, generator=generator) < 0.7
    presence[:, 0] |= ~presence.any(1)
    bits = 1 << torch.arange(PROBE_MODALITIES, dtype=torch.int64)
    return (presence.to(torch.int64) * bits).sum(1)


def _poisoned(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.full(shape, -777_777, dtype=dtype, device=device)


def _poison_outputs() -> bool:
    """Kernel outputs start as NaN / -777777 (as in tests/conftest.py), so that an element a
    kernel forgets to write shows; returns whether the output allocator was found."""
    module = importlib.import_module("mce.ops._checks")
    if not hasattr(module, "new_output"):
        return False
    module.new_output = _poisoned
    return True


def _fill_gpu(device: torch.device, headroom_mib: int) -> list[torch.Tensor]:
    """Allocates (in chunks of at most 1 GiB) until about ``headroom_mib`` MiB stay free."""
    hog: list[torch.Tensor] = []
    for _ in range(4096):  # at most 4 TiB: always ends
        free, _ = torch.cuda.mem_get_info(device)
        spare = free - headroom_mib * MIB
        if spare < 4 * MIB:
            return hog
        size = min(1 << 30, spare) // (2 * MIB) * (2 * MIB)
        try:
            hog.append(torch.empty(size, dtype=torch.uint8, device=device))
        except torch.cuda.OutOfMemoryError:
            return hog
    return hog


def _timed_plan(present: torch.Tensor) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    start = time.perf_counter()
    plan = ops.mc_plan(present, PROBE_MODALITIES, PROBE_PERMUTATIONS, PROBE_SEED)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3, plan


def probe(headroom_mib: int) -> dict:
    """Fills the GPU to ``headroom_mib`` MiB free (0: no filling), then runs mc_plan."""
    report: dict = {"headroom_mib": headroom_mib, "ok": False}
    report["poisoned_outputs"] = _poison_outputs()
    if not torch.cuda.is_available() or not mce.has_cuda_kernels():
        report["error"] = (
            f"no GPU or no mce CUDA kernels (cuda available: {torch.cuda.is_available()}, "
            f"kernels: {mce.has_cuda_kernels()}, import error: {_ext._cuda_import_error!r})"
        )
        return report
    device = torch.device("cuda")
    report["gpu"] = _gpu_name()
    present = _probe_present()
    cpu_rows, cpu_coef = ops.mc_plan(present, PROBE_MODALITIES, PROBE_PERMUTATIONS, PROBE_SEED)
    report["rows"] = int(cpu_rows.shape[0])
    present_gpu = present.to(device)
    ops.exact_plan(present_gpu[:8], PROBE_MODALITIES)  # context and module are up before
    torch.cuda.synchronize()
    hog = _fill_gpu(device, headroom_mib) if headroom_mib > 0 else []
    free_before, total = torch.cuda.mem_get_info(device)
    reserved_before = torch.cuda.memory_reserved(device)
    report["total_mib"] = total // MIB
    report["free_mib_at_launch"] = free_before // MIB
    report["fill_reached"] = headroom_mib == 0 or free_before < (headroom_mib + 64) * MIB
    try:
        report["first_ms"], (rows, coef) = _timed_plan(present_gpu)
        free_after, _ = torch.cuda.mem_get_info(device)
        torch_grew = torch.cuda.memory_reserved(device) - reserved_before
        # What the driver took at the first launch beyond torch's own allocations: mostly the
        # local-memory (stack) reservation of the plan kernels.
        report["driver_took_mib"] = round((free_before - free_after - torch_grew) / MIB, 1)
        report["second_ms"], _ = _timed_plan(present_gpu)
        report["third_ms"], _ = _timed_plan(present_gpu)
        report["identical"] = bool(
            torch.equal(rows.cpu(), cpu_rows) and torch.equal(coef.cpu(), cpu_coef)
        )
        report["ok"] = True
    except (RuntimeError, ValueError) as error:  # reported, not raised: the test names it
        report["error"] = f"{type(error).__name__}: {error}"
    finally:
        del hog
        torch.cuda.empty_cache()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=probe.__doc__)
    parser.add_argument("--headroom-mib", type=int, default=PRESSURE_HEADROOM_MIB)
    args = parser.parse_args()
    report = probe(args.headroom_mib)
    print(json.dumps(report), flush=True)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
