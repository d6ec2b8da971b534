// Python module mce._C_cuda: the CUDA kernels, same names and named arguments as mce._C plus
// `stream` (a cudaStream_t as an integer), which comes last.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <cstdint>

#include "ops.h"

namespace py = pybind11;
using py::arg;

namespace {

template <typename T>
T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

bool cuda_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "CUDA kernels of mce (raw-pointer interface; use mce.ops instead).";
  const auto release = py::call_guard<py::gil_scoped_release>();

  m.def("cuda_available", &cuda_available, "Whether a CUDA device is visible to this build.");

  m.def("exact_plan", [](std::uintptr_t present, std::uintptr_t row_offsets, int64_t num_samples,
                         int64_t num_rows, std::uintptr_t rows, std::uintptr_t stream) {
    mce::exact_plan_cuda(ptr<const int64_t>(present), ptr<const int64_t>(row_offsets), num_samples,
                         num_rows, ptr<int64_t>(rows), ptr<void>(stream));
  }, "Fill the rows of an exact coalition plan.", arg("present"), arg("row_offsets"),
        arg("num_samples"), arg("num_rows"), arg("rows"), arg("stream"), release);

  m.def("mc_plan_prepare", [](std::uintptr_t present, std::uintptr_t scratch_offsets,
                              int64_t num_samples, int64_t num_permutations, uint64_t seed,
                              std::uintptr_t scratch, std::uintptr_t distinct,
                              std::uintptr_t stream) {
    mce::mc_plan_prepare_cuda(ptr<const int64_t>(present), ptr<const int64_t>(scratch_offsets),
                              num_samples, num_permutations, seed, ptr<uint64_t>(scratch),
                              ptr<int64_t>(distinct), ptr<void>(stream));
  }, "Sample permutation prefixes and count distinct coalitions per sample.", arg("present"),
        arg("scratch_offsets"), arg("num_samples"), arg("num_permutations"), arg("seed"),
        arg("scratch"), arg("distinct"), arg("stream"), release);

  m.def("mc_plan_emit", [](std::uintptr_t scratch, std::uintptr_t scratch_offsets,
                           std::uintptr_t row_offsets, int64_t num_samples,
                           int64_t num_permutations, int num_modalities, std::uintptr_t rows,
                           std::uintptr_t coef, std::uintptr_t stream) {
    mce::mc_plan_emit_cuda(ptr<const uint64_t>(scratch), ptr<const int64_t>(scratch_offsets),
                           ptr<const int64_t>(row_offsets), num_samples, num_permutations,
                           num_modalities, ptr<int64_t>(rows), ptr<float>(coef),
                           ptr<void>(stream));
  }, "Write the rows and coefficients of a Monte Carlo plan.", arg("scratch"),
        arg("scratch_offsets"), arg("row_offsets"), arg("num_samples"), arg("num_permutations"),
        arg("num_modalities"), arg("rows"), arg("coef"), arg("stream"), release);

  m.def("row_offsets", [](std::uintptr_t rows, int64_t num_rows, int64_t num_samples,
                          std::uintptr_t row_offsets, std::uintptr_t stream) {
    mce::row_offsets_cuda(ptr<const int64_t>(rows), num_rows, num_samples,
                          ptr<int64_t>(row_offsets), ptr<void>(stream));
  }, "First row of each sample (binary search over the rows' sample column).", arg("rows"),
        arg("num_rows"), arg("num_samples"), arg("row_offsets"), arg("stream"), release);

  m.def("shapley_from_rows", [](std::uintptr_t rows, std::uintptr_t v, std::uintptr_t coef,
                                std::uintptr_t present, std::uintptr_t row_offsets,
                                int64_t num_rows, int64_t num_samples, int num_modalities,
                                std::uintptr_t phi, std::uintptr_t first_bad_row,
                                std::uintptr_t stream) {
    mce::shapley_from_rows_cuda(ptr<const int64_t>(rows), ptr<const float>(v),
                                ptr<const float>(coef), ptr<const int64_t>(present),
                                ptr<const int64_t>(row_offsets), num_rows, num_samples,
                                num_modalities, ptr<float>(phi), ptr<int64_t>(first_bad_row),
                                ptr<void>(stream));
  }, "Aggregate per-row utilities into Shapley values (coef = 0 for exact weights).", arg("rows"),
        arg("v"), arg("coef"), arg("present"), arg("row_offsets"), arg("num_rows"),
        arg("num_samples"), arg("num_modalities"), arg("phi"), arg("first_bad_row"),
        arg("stream"), release);

  m.def("subset_gather", [](std::uintptr_t h, std::uintptr_t rows, int64_t num_rows,
                            int num_modalities, int64_t features, int dtype, std::uintptr_t out,
                            std::uintptr_t stream) {
    mce::subset_gather_cuda(ptr<const void>(h), ptr<const int64_t>(rows), num_rows,
                            num_modalities, features, dtype, ptr<void>(out), ptr<void>(stream));
  }, "Gather per-row features with modalities outside the subset zeroed.", arg("h"), arg("rows"),
        arg("num_rows"), arg("num_modalities"), arg("features"), arg("dtype"), arg("out"),
        arg("stream"), release);

  m.def("subset_gather_backward", [](std::uintptr_t grad_out, std::uintptr_t rows,
                                     std::uintptr_t row_offsets, int64_t num_samples,
                                     int num_modalities, int64_t features, int dtype,
                                     std::uintptr_t grad_h, std::uintptr_t stream) {
    mce::subset_gather_backward_cuda(ptr<const void>(grad_out), ptr<const int64_t>(rows),
                                     ptr<const int64_t>(row_offsets), num_samples,
                                     num_modalities, features, dtype, ptr<void>(grad_h),
                                     ptr<void>(stream));
  }, "Scatter-add row gradients back to samples.", arg("grad_out"), arg("rows"),
        arg("row_offsets"), arg("num_samples"), arg("num_modalities"), arg("features"),
        arg("dtype"), arg("grad_h"), arg("stream"), release);

  m.def("lce_factors", [](std::uintptr_t dataset_counts, int64_t dataset_size,
                          std::uintptr_t batch_present, int64_t num_samples, std::uintptr_t upper,
                          std::uintptr_t phi, int num_modalities, std::uintptr_t factor_a,
                          std::uintptr_t factor_b, std::uintptr_t stream) {
    mce::lce_factors_cuda(ptr<const int64_t>(dataset_counts), dataset_size,
                          ptr<const int64_t>(batch_present), num_samples, ptr<const float>(upper),
                          ptr<const float>(phi), num_modalities, ptr<float>(factor_a),
                          ptr<float>(factor_b), ptr<void>(stream));
  }, "Dataset factor A and batch factor B.", arg("dataset_counts"), arg("dataset_size"),
        arg("batch_present"), arg("num_samples"), arg("upper"), arg("phi"),
        arg("num_modalities"), arg("factor_a"), arg("factor_b"), arg("stream"), release);
}
