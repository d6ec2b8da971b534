// Shapley aggregation on the GPU: one block per sample, threads stride over the sample's rows,
// per-modality sums reduced across warps in a fixed order (deterministic).
#include "launch.cuh"
#include "mce/bits.h"
#include "mce/errors.h"
#include "mce/shapley_weights.h"
#include "ops.h"

namespace mce {
namespace {

constexpr int kShapleyThreads = 128;
constexpr int kWarps = kShapleyThreads / 32;

__device__ __forceinline__ void report_bad_row(unsigned long long* first_bad_row, int64_t r) {
  atomicMin(first_bad_row, static_cast<unsigned long long>(r));
}

// Checks each row as it reads it, as the CPU twin does (see ops.h): a row that breaks the
// contract is reported through *first_bad_row and never aggregated.
__global__ void shapley_kernel(const int64_t* rows, const float* v, const float* coef,
                               const int64_t* present, const int64_t* row_offsets,
                               int64_t num_rows, int64_t num_samples, int num_modalities,
                               float* phi, unsigned long long* first_bad_row) {
  const int64_t n = blockIdx.x;
  const uint32_t mask = static_cast<uint32_t>(present[n]);
  const int a = popcount32(mask);
  __shared__ double weights[kMaxModalities + 1];
  __shared__ double partial[kWarps][kMaxModalities + 1];
  if (coef == nullptr && threadIdx.x < a) weights[threadIdx.x] = shapley_weight(threadIdx.x, a);
  if (threadIdx.x == 0) {
    // The offsets must cover [0, R): a gap at either end is reported as its first row.
    if (n == 0 && row_offsets[0] != 0) report_bad_row(first_bad_row, 0);
    const int64_t end = row_offsets[num_samples];
    if (n == num_samples - 1 && end != num_rows) {
      report_bad_row(first_bad_row, end < num_rows ? end : num_rows);
    }
  }
  __syncthreads();

  const int64_t first = row_offsets[n];
  const int64_t last = row_offsets[n + 1] < num_rows ? row_offsets[n + 1] : num_rows;
  double totals[kMaxModalities + 1];
  for (int m = 0; m < num_modalities; ++m) totals[m] = 0.0;
  for (int64_t r = first + threadIdx.x; r < last; r += blockDim.x) {
    const int64_t subset_bits = rows[2 * r + 1];
    const float raw_value = v[r];
    if (rows[2 * r] != n || subset_bits <= 0 || (subset_bits & ~static_cast<int64_t>(mask)) != 0 ||
        !isfinite(raw_value)) {
      report_bad_row(first_bad_row, r);
      continue;
    }
    const double value = raw_value;
    if (coef != nullptr) {
      for (int m = 0; m < num_modalities; ++m) {
        if ((mask >> m) & 1u) totals[m] += static_cast<double>(coef[r * num_modalities + m]) * value;
      }
      continue;
    }
    const uint32_t subset = static_cast<uint32_t>(subset_bits);
    const int size = popcount32(subset);
    const double joined = weights[size - 1] * value;
    const double left_out = size < a ? weights[size] * value : 0.0;
    for (int m = 0; m < num_modalities; ++m) {
      if ((mask >> m) & 1u) totals[m] += (subset >> m) & 1u ? joined : -left_out;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int m = 0; m < num_modalities; ++m) {
    double total = totals[m];
    for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_down_sync(0xFFFFFFFFu, total, offset);
    if (lane == 0) partial[warp][m] = total;
  }
  __syncthreads();
  if (threadIdx.x < num_modalities) {
    double total = 0.0;
    for (int w = 0; w < kWarps; ++w) total += partial[w][threadIdx.x];
    phi[n * num_modalities + threadIdx.x] = static_cast<float>(total);
  }
}

}  // namespace

void shapley_from_rows_cuda(const int64_t* rows, const float* v, const float* coef,
                            const int64_t* present, const int64_t* row_offsets, int64_t num_rows,
                            int64_t num_samples, int num_modalities, float* phi,
                            int64_t* first_bad_row, void* stream) {
  require(num_modalities >= 1 && num_modalities <= kMaxModalities,
          "shapley_from_rows: num_modalities must be in [1, ", kMaxModalities, "], got ",
          num_modalities);
  if (num_samples == 0) return;
  shapley_kernel<<<static_cast<unsigned>(num_samples), kShapleyThreads, 0, as_stream(stream)>>>(
      rows, v, coef, present, row_offsets, num_rows, num_samples, num_modalities, phi,
      reinterpret_cast<unsigned long long*>(first_bad_row));
  check_launch("shapley_kernel");
}

}  // namespace mce
