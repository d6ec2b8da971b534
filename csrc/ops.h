// Kernel entry points. Every function takes raw pointers to contiguous buffers and sizes; the
// CUDA twins take the same arguments plus the CUDA stream to launch on. Shapes are documented
// in src/mce/ops/. Inputs are validated in Python; the kernels assert what they rely on.
#pragma once
#include <cstdint>

namespace mce {

// --- CPU --------------------------------------------------------------------------------------

// rows[row_offsets[n] : row_offsets[n + 1]] = every non-empty subset of present[n].
void exact_plan_cpu(const int64_t* present, const int64_t* row_offsets, int64_t num_samples,
                    int64_t num_rows, int64_t* rows);

// Generates the K * |A_n| prefix entries of every sample into
// scratch[scratch_offsets[n] : scratch_offsets[n + 1]], groups them by coalition (scratch holds
// 2 * scratch_offsets[N] entries: the second half is sorting space) and writes distinct[n], the
// number of distinct coalitions (rows) of sample n.
void mc_plan_prepare_cpu(const int64_t* present, const int64_t* scratch_offsets,
                         int64_t num_samples, int64_t num_permutations, uint64_t seed,
                         uint64_t* scratch, int64_t* distinct);

// Writes rows [R, 2] and coef [R, M] from the prepared scratch.
void mc_plan_emit_cpu(const uint64_t* scratch, const int64_t* scratch_offsets,
                      const int64_t* row_offsets, int64_t num_samples, int64_t num_permutations,
                      int num_modalities, int64_t* rows, float* coef);

// row_offsets [N + 1]: row_offsets[n] = first row r with rows[r, 0] >= n (a lower bound by
// binary search over the sample column, so the offsets are non-decreasing and in [0, R] whatever
// the rows hold); for rows grouped by sample, sample n's rows are [row_offsets[n], row_offsets[n + 1]).
void row_offsets_cpu(const int64_t* rows, int64_t num_rows, int64_t num_samples,
                     int64_t* row_offsets);

// phi [N, M] from rows [R, 2] grouped by sample, row_offsets [N + 1] from row_offsets_*, and
// utilities v [R]; coef [R, M] for Monte Carlo plans, nullptr for exact weights. Each row is
// checked in the pass that reads it: row_offsets[0] = 0, row_offsets[N] = R, every row of
// sample n's range names n, holds a non-empty subset of present[n] and a finite utility. The
// caller fills *first_bad_row with R; the kernel lowers it to the index of a row breaking this
// (one it finds first). A bad row is never used; phi is then unspecified and the caller raises.
void shapley_from_rows_cpu(const int64_t* rows, const float* v, const float* coef,
                           const int64_t* present, const int64_t* row_offsets, int64_t num_rows,
                           int64_t num_samples, int num_modalities, float* phi,
                           int64_t* first_bad_row);

// X [R, M, F] = h [N, M, F] gathered at rows' samples, zeroed outside rows' subsets.
void subset_gather_cpu(const void* h, const int64_t* rows, int64_t num_rows, int num_modalities,
                       int64_t features, int dtype, void* out);

// grad_h [N, M, F] = sum over rows of sample n whose subset holds m of grad_out [R, M, F].
void subset_gather_backward_cpu(const void* grad_out, const int64_t* rows,
                                const int64_t* row_offsets, int64_t num_samples,
                                int num_modalities, int64_t features, int dtype, void* grad_h);

// A [M] = (dataset_size / dataset_counts) / mean;
// B [M] = max(upper - sum_n phi[n], 0) / batch count, 0 where absent from the batch.
void lce_factors_cpu(const int64_t* dataset_counts, int64_t dataset_size,
                     const int64_t* batch_present, int64_t num_samples, const float* upper,
                     const float* phi, int num_modalities, float* factor_a, float* factor_b);

// --- CUDA (same contracts; `stream` is a cudaStream_t) ----------------------------------------

void exact_plan_cuda(const int64_t* present, const int64_t* row_offsets, int64_t num_samples,
                     int64_t num_rows, int64_t* rows, void* stream);
void mc_plan_prepare_cuda(const int64_t* present, const int64_t* scratch_offsets,
                          int64_t num_samples, int64_t num_permutations, uint64_t seed,
                          uint64_t* scratch, int64_t* distinct, void* stream);
void mc_plan_emit_cuda(const uint64_t* scratch, const int64_t* scratch_offsets,
                       const int64_t* row_offsets, int64_t num_samples, int64_t num_permutations,
                       int num_modalities, int64_t* rows, float* coef, void* stream);
void row_offsets_cuda(const int64_t* rows, int64_t num_rows, int64_t num_samples,
                      int64_t* row_offsets, void* stream);
void shapley_from_rows_cuda(const int64_t* rows, const float* v, const float* coef,
                            const int64_t* present, const int64_t* row_offsets, int64_t num_rows,
                            int64_t num_samples, int num_modalities, float* phi,
                            int64_t* first_bad_row, void* stream);
void subset_gather_cuda(const void* h, const int64_t* rows, int64_t num_rows, int num_modalities,
                        int64_t features, int dtype, void* out, void* stream);
void subset_gather_backward_cuda(const void* grad_out, const int64_t* rows,
                                 const int64_t* row_offsets, int64_t num_samples,
                                 int num_modalities, int64_t features, int dtype, void* grad_h,
                                 void* stream);
void lce_factors_cuda(const int64_t* dataset_counts, int64_t dataset_size,
                      const int64_t* batch_present, int64_t num_samples, const float* upper,
                      const float* phi, int num_modalities, float* factor_a, float* factor_b,
                      void* stream);

}  // namespace mce
