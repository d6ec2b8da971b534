// Coalition plans on the GPU: the same per-sample routines as the CPU kernels.
#include "launch.cuh"
#include "mce/bits.h"
#include "mce/plan_sample.h"
#include "ops.h"

namespace mce {
namespace {

// One thread per row: finds its sample by binary search over row_offsets, then deposits the
// row's rank within the sample into the sample's present bits (increasing subsets, as on the CPU).
__global__ void exact_plan_kernel(const int64_t* present, const int64_t* row_offsets,
                                  int64_t num_samples, int64_t num_rows, int64_t* rows) {
  for (int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; r < num_rows;
       r += int64_t{blockDim.x} * gridDim.x) {
    int64_t low = 0, high = num_samples;  // last n with row_offsets[n] <= r
    while (high - low > 1) {
      const int64_t mid = (low + high) / 2;
      if (row_offsets[mid] <= r) low = mid; else high = mid;
    }
    const uint32_t rank = static_cast<uint32_t>(r - row_offsets[low] + 1);
    rows[2 * r] = low;
    rows[2 * r + 1] = deposit_bits(rank, static_cast<uint32_t>(present[low]));
  }
}

__global__ void mc_prepare_kernel(const int64_t* present, const int64_t* scratch_offsets,
                                  int64_t num_samples, uint32_t num_permutations, uint64_t seed,
                                  uint64_t* scratch, int64_t* distinct) {
  for (int64_t n = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; n < num_samples;
       n += int64_t{blockDim.x} * gridDim.x) {
    distinct[n] = mc_prepare_sample(static_cast<uint32_t>(present[n]), n, num_permutations, seed,
                                    scratch + scratch_offsets[n],
                                    scratch + scratch_offsets[num_samples] + scratch_offsets[n]);
  }
}

__global__ void mc_emit_kernel(const uint64_t* scratch, const int64_t* scratch_offsets,
                               const int64_t* row_offsets, int64_t num_samples,
                               uint32_t num_permutations, int num_modalities, int64_t* rows,
                               float* coef) {
  for (int64_t n = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; n < num_samples;
       n += int64_t{blockDim.x} * gridDim.x) {
    const int64_t first_row = row_offsets[n];
    mc_rows_of_sample(scratch + scratch_offsets[n], scratch_offsets[n + 1] - scratch_offsets[n],
                      n, num_permutations, num_modalities, rows + 2 * first_row,
                      coef + first_row * num_modalities);
  }
}

// One thread per boundary n = 0 .. N: the same binary search as the CPU twin.
__global__ void row_offsets_kernel(const int64_t* rows, int64_t num_rows, int64_t num_samples,
                                   int64_t* row_offsets) {
  for (int64_t n = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; n <= num_samples;
       n += int64_t{blockDim.x} * gridDim.x) {
    row_offsets[n] = lower_bound_of_sample(rows, num_rows, n);
  }
}

constexpr int kSampleThreads = 64;  // per-sample kernels hold large local arrays

}  // namespace

void exact_plan_cuda(const int64_t* present, const int64_t* row_offsets, int64_t num_samples,
                     int64_t num_rows, int64_t* rows, void* stream) {
  if (num_rows == 0) return;
  exact_plan_kernel<<<grid_for(num_rows), kThreads, 0, as_stream(stream)>>>(
      present, row_offsets, num_samples, num_rows, rows);
  check_launch("exact_plan_kernel");
}

void row_offsets_cuda(const int64_t* rows, int64_t num_rows, int64_t num_samples,
                      int64_t* row_offsets, void* stream) {
  row_offsets_kernel<<<grid_for(num_samples + 1), kThreads, 0, as_stream(stream)>>>(
      rows, num_rows, num_samples, row_offsets);
  check_launch("row_offsets_kernel");
}

void mc_plan_prepare_cuda(const int64_t* present, const int64_t* scratch_offsets,
                          int64_t num_samples, int64_t num_permutations, uint64_t seed,
                          uint64_t* scratch, int64_t* distinct, void* stream) {
  if (num_samples == 0) return;
  mc_prepare_kernel<<<grid_for(num_samples, kSampleThreads), kSampleThreads, 0,
                      as_stream(stream)>>>(present, scratch_offsets, num_samples,
                                           static_cast<uint32_t>(num_permutations), seed, scratch,
                                           distinct);
  check_launch("mc_prepare_kernel");
}

void mc_plan_emit_cuda(const uint64_t* scratch, const int64_t* scratch_offsets,
                       const int64_t* row_offsets, int64_t num_samples, int64_t num_permutations,
                       int num_modalities, int64_t* rows, float* coef, void* stream) {
  if (num_samples == 0) return;
  mc_emit_kernel<<<grid_for(num_samples, kSampleThreads), kSampleThreads, 0,
                   as_stream(stream)>>>(scratch, scratch_offsets, row_offsets, num_samples,
                                        static_cast<uint32_t>(num_permutations), num_modalities,
                                        rows, coef);
  check_launch("mc_emit_kernel");
}

}  // namespace mce
