// LCE factors A (Eq. 3, mean-normalised) and B (Eq. 8) on the CPU.
#include <algorithm>

#include "mce/bits.h"
#include "mce/errors.h"
#include "ops.h"

namespace mce {

void lce_factors_cpu(const int64_t* dataset_counts, int64_t dataset_size,
                     const int64_t* batch_present, int64_t num_samples, const float* upper,
                     const float* phi, int num_modalities, float* factor_a, float* factor_b) {
  double raw_a[kMaxModalities + 1];
  double mean_a = 0.0;
  for (int m = 0; m < num_modalities; ++m) {
    require(dataset_counts[m] > 0, "lce_factors: modality ", m, " is never present in the data set");
    raw_a[m] = static_cast<double>(dataset_size) / static_cast<double>(dataset_counts[m]);
    mean_a += raw_a[m] / num_modalities;
  }
  for (int m = 0; m < num_modalities; ++m) {
    factor_a[m] = static_cast<float>(raw_a[m] / mean_a);
    int64_t batch_count = 0;
    double phi_total = 0.0;
    for (int64_t n = 0; n < num_samples; ++n) {
      batch_count += (static_cast<uint64_t>(batch_present[n]) >> m) & 1u;
      phi_total += phi[n * num_modalities + m];
    }
    const double gap = std::max(static_cast<double>(upper[m]) - phi_total, 0.0);
    factor_b[m] = batch_count > 0 ? static_cast<float>(gap / batch_count) : 0.0f;
  }
}

}  // namespace mce
