// LCE factors on the GPU: one thread per modality (M <= 31), in one warp.
#include "launch.cuh"
#include "mce/bits.h"
#include "ops.h"

namespace mce {
namespace {

__global__ void lce_kernel(const int64_t* dataset_counts, int64_t dataset_size,
                           const int64_t* batch_present, int64_t num_samples, const float* upper,
                           const float* phi, int num_modalities, float* factor_a,
                           float* factor_b) {
  __shared__ double raw_a[kMaxModalities + 1];
  const int m = threadIdx.x;
  if (m < num_modalities) {
    raw_a[m] = static_cast<double>(dataset_size) / static_cast<double>(dataset_counts[m]);
  }
  __syncthreads();
  if (m >= num_modalities) return;
  double mean_a = 0.0;
  for (int k = 0; k < num_modalities; ++k) mean_a += raw_a[k] / num_modalities;
  factor_a[m] = static_cast<float>(raw_a[m] / mean_a);
  int64_t batch_count = 0;
  double phi_total = 0.0;
  for (int64_t n = 0; n < num_samples; ++n) {
    batch_count += (static_cast<uint64_t>(batch_present[n]) >> m) & 1u;
    phi_total += phi[n * num_modalities + m];
  }
  const double gap = fmax(static_cast<double>(upper[m]) - phi_total, 0.0);
  factor_b[m] = batch_count > 0 ? static_cast<float>(gap / batch_count) : 0.0f;
}

}  // namespace

void lce_factors_cuda(const int64_t* dataset_counts, int64_t dataset_size,
                      const int64_t* batch_present, int64_t num_samples, const float* upper,
                      const float* phi, int num_modalities, float* factor_a, float* factor_b,
                      void* stream) {
  lce_kernel<<<1, 32, 0, as_stream(stream)>>>(dataset_counts, dataset_size, batch_present,
                                              num_samples, upper, phi, num_modalities, factor_a,
                                              factor_b);
  check_launch("lce_kernel");
}

}  // namespace mce
