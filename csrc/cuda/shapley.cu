// Shapley aggregation on the GPU: one block per sample, threads stride over the sample's rows,
// per-modality sums reduced across warps in a fixed order (deterministic).
#include "launch.cuh"
#include "mce/bits.h"
#include "mce/shapley_weights.h"
#include "ops.h"

namespace mce {
namespace {

constexpr int kShapleyThreads = 128;
constexpr int kWarps = kShapleyThreads / 32;

__global__ void shapley_kernel(const int64_t* rows, const float* v, const float* coef,
                               const int64_t* present, const int64_t* row_offsets,
                               int num_modalities, float* phi) {
  const int64_t n = blockIdx.x;
  const uint32_t mask = static_cast<uint32_t>(present[n]);
  const int a = popcount32(mask);
  __shared__ double weights[kMaxModalities + 1];
  __shared__ double partial[kWarps][kMaxModalities + 1];
  if (coef == nullptr && threadIdx.x < a) weights[threadIdx.x] = shapley_weight(threadIdx.x, a);
  __syncthreads();

  double totals[kMaxModalities + 1];
  for (int m = 0; m < num_modalities; ++m) totals[m] = 0.0;
  for (int64_t r = row_offsets[n] + threadIdx.x; r < row_offsets[n + 1]; r += blockDim.x) {
    const double value = v[r];
    if (coef != nullptr) {
      for (int m = 0; m < num_modalities; ++m) {
        if ((mask >> m) & 1u) totals[m] += static_cast<double>(coef[r * num_modalities + m]) * value;
      }
      continue;
    }
    const uint32_t subset = static_cast<uint32_t>(rows[2 * r + 1]);
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
                            const int64_t* present, const int64_t* row_offsets,
                            int64_t num_samples, int num_modalities, float* phi, void* stream) {
  if (num_samples == 0) return;
  shapley_kernel<<<static_cast<unsigned>(num_samples), kShapleyThreads, 0, as_stream(stream)>>>(
      rows, v, coef, present, row_offsets, num_modalities, phi);
  check_launch("shapley_kernel");
}

}  // namespace mce
