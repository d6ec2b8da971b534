// Shapley aggregation phi[n, m] = sum_r coef[r, m] * v[r] on the CPU.
#include "mce/bits.h"
#include "mce/shapley_weights.h"
#include "ops.h"

namespace mce {

void shapley_from_rows_cpu(const int64_t* rows, const float* v, const float* coef,
                           const int64_t* present, const int64_t* row_offsets,
                           int64_t num_samples, int num_modalities, float* phi) {
  double weights[kMaxModalities + 1];
  double totals[kMaxModalities + 1];
  for (int64_t n = 0; n < num_samples; ++n) {
    const uint32_t mask = static_cast<uint32_t>(present[n]);
    const int a = popcount32(mask);
    if (coef == nullptr) fill_shapley_weights(a, weights);
    for (int m = 0; m < num_modalities; ++m) totals[m] = 0.0;
    for (int64_t r = row_offsets[n]; r < row_offsets[n + 1]; ++r) {
      const double value = v[r];
      if (coef != nullptr) {
        const float* row_coef = coef + r * num_modalities;
        for (uint32_t rest = mask; rest != 0; rest &= rest - 1u) {
          const int m = lowest_bit_index(rest);
          totals[m] += static_cast<double>(row_coef[m]) * value;
        }
        continue;
      }
      const uint32_t subset = static_cast<uint32_t>(rows[2 * r + 1]);
      const int size = popcount32(subset);
      // m in S: + w(|S| - 1, a) v(S); m in A \ S: - w(|S|, a) v(S).
      const double joined = weights[size - 1] * value;
      const double left_out = size < a ? weights[size] * value : 0.0;
      for (uint32_t rest = mask; rest != 0; rest &= rest - 1u) {
        const int m = lowest_bit_index(rest);
        totals[m] += (subset >> m) & 1u ? joined : -left_out;
      }
    }
    for (int m = 0; m < num_modalities; ++m) {
      phi[n * num_modalities + m] = static_cast<float>(totals[m]);
    }
  }
}

}  // namespace mce
