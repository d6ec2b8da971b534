"""mce: Modality Capability Enhancement for multimodal learning with missing modalities."""

from mce._ext import has_cpu_kernels, has_cuda_kernels
from mce.ops import exact_plan, lce_factors, mc_plan, shapley_from_rows, subset_gather

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # capabilities
    "has_cpu_kernels",
    "has_cuda_kernels",
    # kernel ops
    "exact_plan",
    "mc_plan",
    "shapley_from_rows",
    "subset_gather",
    "lce_factors",
]
