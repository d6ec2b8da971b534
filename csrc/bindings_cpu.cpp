// Python module mce._C: the CPU kernels. Pointers arrive as integers (Tensor.data_ptr()); every
// argument is named (py::arg), and mce.ops passes them by keyword, so a swapped or misspelt
// argument is a TypeError instead of corrupted memory.
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

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "CPU kernels of mce (raw-pointer interface; use mce.ops instead).";
  const auto release = py::call_guard<py::gil_scoped_release>();

  m.def("exact_plan", [](std::uintptr_t present, std::uintptr_t row_offsets, int64_t num_samples,
                         int64_t num_rows, std::uintptr_t rows) {
    mce::exact_plan_cpu(ptr<const int64_t>(present), ptr<const int64_t>(row_offsets), num_samples,
                        num_rows, ptr<int64_t>(rows));
  }, "Fill the rows of an exact coalition plan.", arg("present"), arg("row_offsets"),
        arg("num_samples"), arg("num_rows"), arg("rows"), release);

  m.def("mc_plan_prepare", [](std::uintptr_t present, std::uintptr_t scratch_offsets,
                              int64_t num_samples, int64_t num_permutations, uint64_t seed,
                              std::uintptr_t scratch, std::uintptr_t distinct) {
    mce::mc_plan_prepare_cpu(ptr<const int64_t>(present), ptr<const int64_t>(scratch_offsets),
                             num_samples, num_permutations, seed, ptr<uint64_t>(scratch),
                             ptr<int64_t>(distinct));
  }, "Sample permutation prefixes and count distinct coalitions per sample.", arg("present"),
        arg("scratch_offsets"), arg("num_samples"), arg("num_permutations"), arg("seed"),
        arg("scratch"), arg("distinct"), release);

  m.def("mc_plan_emit", [](std::uintptr_t scratch, std::uintptr_t scratch_offsets,
                           std::uintptr_t row_offsets, int64_t num_samples,
                           int64_t num_permutations, int num_modalities, std::uintptr_t rows,
                           std::uintptr_t coef) {
    mce::mc_plan_emit_cpu(ptr<const uint64_t>(scratch), ptr<const int64_t>(scratch_offsets),
                          ptr<const int64_t>(row_offsets), num_samples, num_permutations,
                          num_modalities, ptr<int64_t>(rows), ptr<float>(coef));
  }, "Write the rows and coefficients of a Monte Carlo plan.", arg("scratch"),
        arg("scratch_offsets"), arg("row_offsets"), arg("num_samples"), arg("num_permutations"),
        arg("num_modalities"), arg("rows"), arg("coef"), release);

  m.def("row_offsets", [](std::uintptr_t rows, int64_t num_rows, int64_t num_samples,
                          std::uintptr_t row_offsets) {
    mce::row_offsets_cpu(ptr<const int64_t>(rows), num_rows, num_samples,
                         ptr<int64_t>(row_offsets));
  }, "First row of each sample (binary search over the rows' sample column).", arg("rows"),
        arg("num_rows"), arg("num_samples"), arg("row_offsets"), release);

  m.def("shapley_from_rows", [](std::uintptr_t rows, std::uintptr_t v, std::uintptr_t coef,
                                std::uintptr_t present, std::uintptr_t row_offsets,
                                int64_t num_rows, int64_t num_samples, int num_modalities,
                                std::uintptr_t phi, std::uintptr_t first_bad_row) {
    mce::shapley_from_rows_cpu(ptr<const int64_t>(rows), ptr<const float>(v),
                               ptr<const float>(coef), ptr<const int64_t>(present),
                               ptr<const int64_t>(row_offsets), num_rows, num_samples,
                               num_modalities, ptr<float>(phi), ptr<int64_t>(first_bad_row));
  }, "Aggregate per-row utilities into Shapley values (coef = 0 for exact weights).", arg("rows"),
        arg("v"), arg("coef"), arg("present"), arg("row_offsets"), arg("num_rows"),
        arg("num_samples"), arg("num_modalities"), arg("phi"), arg("first_bad_row"), release);

  m.def("subset_gather", [](std::uintptr_t h, std::uintptr_t rows, int64_t num_rows,
                            int num_modalities, int64_t features, int dtype, std::uintptr_t out) {
    mce::subset_gather_cpu(ptr<const void>(h), ptr<const int64_t>(rows), num_rows, num_modalities,
                           features, dtype, ptr<void>(out));
  }, "Gather per-row features with modalities outside the subset zeroed.", arg("h"), arg("rows"),
        arg("num_rows"), arg("num_modalities"), arg("features"), arg("dtype"), arg("out"),
        release);

  m.def("subset_gather_backward", [](std::uintptr_t grad_out, std::uintptr_t rows,
                                     std::uintptr_t row_offsets, int64_t num_samples,
                                     int num_modalities, int64_t features, int dtype,
                                     std::uintptr_t grad_h) {
    mce::subset_gather_backward_cpu(ptr<const void>(grad_out), ptr<const int64_t>(rows),
                                    ptr<const int64_t>(row_offsets), num_samples, num_modalities,
                                    features, dtype, ptr<void>(grad_h));
  }, "Scatter-add row gradients back to samples.", arg("grad_out"), arg("rows"),
        arg("row_offsets"), arg("num_samples"), arg("num_modalities"), arg("features"),
        arg("dtype"), arg("grad_h"), release);

  m.def("lce_factors", [](std::uintptr_t dataset_counts, int64_t dataset_size,
                          std::uintptr_t batch_present, int64_t num_samples, std::uintptr_t upper,
                          std::uintptr_t phi, int num_modalities, std::uintptr_t factor_a,
                          std::uintptr_t factor_b) {
    mce::lce_factors_cpu(ptr<const int64_t>(dataset_counts), dataset_size,
                         ptr<const int64_t>(batch_present), num_samples, ptr<const float>(upper),
                         ptr<const float>(phi), num_modalities, ptr<float>(factor_a),
                         ptr<float>(factor_b));
  }, "Dataset factor A and batch factor B.", arg("dataset_counts"), arg("dataset_size"),
        arg("batch_present"), arg("num_samples"), arg("upper"), arg("phi"),
        arg("num_modalities"), arg("factor_a"), arg("factor_b"), release);
}
