"""Loads the compiled kernels once and keeps the real import error for the message."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/mce in a clone

_cpu_module: ModuleType | None
_cpu_import_error: ImportError | None = None
try:
    from mce import _C as _cpu_module
except ImportError as error:  # kept, and re-raised with advice when a kernel is needed
    _cpu_module = None
    _cpu_import_error = error

_cuda_module: ModuleType | None
_cuda_import_error: ImportError | None = None
try:
    from mce import _C_cuda as _cuda_module
except ImportError as error:
    _cuda_module = None
    _cuda_import_error = error


def _imported_from_source_tree() -> bool:
    return (_PACKAGE_DIR.parent.parent / "CMakeLists.txt").exists()


def has_cpu_kernels() -> bool:
    """Whether the CPU extension ``mce._C`` is importable."""
    return _cpu_module is not None


def has_cuda_kernels() -> bool:
    """Whether the CUDA extension is built and a CUDA device is visible to it."""
    return _cuda_module is not None and bool(_cuda_module.cuda_available())


def cpu_kernels() -> ModuleType:
    """The CPU extension module; raises ImportError with advice when it is missing."""
    if _cpu_module is not None:
        return _cpu_module
    advice = "Install the package with `pip install .` from the repository root."
    if _imported_from_source_tree():
        advice = (
            f"`mce` was imported from the source tree {_PACKAGE_DIR}, which "
            "holds no compiled extension (is src/ on PYTHONPATH?). Install with "
            "`pip install .`, or in editable mode: "
            "`pip install --no-build-isolation -Cbuild-dir=build -e .`."
        )
    raise ImportError(f"the mce CPU kernels (mce._C) are not available. {advice}") from (
        _cpu_import_error
    )


def cuda_kernels() -> ModuleType:
    """The CUDA extension module; raises RuntimeError with the reason when it cannot run."""
    if _cuda_module is None:
        raise RuntimeError(
            "a CUDA tensor was given but mce was built without its CUDA kernels (nvcc was not "
            "found at build time, or MCE_CUDA=0). Reinstall on a machine with nvcc, or move the "
            "tensors to the CPU."
        ) from _cuda_import_error
    if not _cuda_module.cuda_available():
        raise RuntimeError("the mce CUDA kernels are built but no CUDA device is visible")
    return _cuda_module
