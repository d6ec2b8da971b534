// Shapley aggregation phi[n, m] = sum_r coef[r, m] * v[r] on the CPU.
#include <cmath>

#include "mce/bits.h"
#include "mce/errors.h"
#include "mce/shapley_weights.h"
#include "ops.h"

namespace mce {
namespace {

constexpr int kNibbles = (kMaxModalities + 3) / 4;

// Checks row r of sample n as it is read: a non-empty subset of the sample's present set and a
// finite utility.
inline void check_row(const int64_t* rows, const float* v, int64_t r, int64_t n, uint32_t mask) {
  const int64_t subset = rows[2 * r + 1];
  require(subset > 0 && (subset & ~static_cast<int64_t>(mask)) == 0, "rows[", r,
          "] holds subset ", subset, ", which is empty or not a subset of present[", n, "] = ",
          mask);
  require(std::isfinite(v[r]), "v holds NaN or infinite utilities (v[", r, "])");
}

// Exact weights (Eq. 5) for the rows of sample n starting at `first`; returns one past its last
// row. With t_S = w(|S|-1, a) v(S) + w(|S|, a) v(S) and L = sum_S w(|S|, a) v(S) (w(a, a) = 0):
//   phi_m = sum_{S containing m} t_S - L.
// The sums over S containing m are read off per-nibble histograms of t: each row adds t to one
// bucket per 4 modalities, so a row costs O(M / 4) adds instead of O(M) branches.
int64_t exact_sample(const int64_t* rows, const float* v, int64_t first, int64_t num_rows,
                     int64_t n, uint32_t mask, int num_modalities, double* totals) {
  double weights[kMaxModalities + 2];
  const int a = popcount32(mask);
  fill_shapley_weights(a, weights);
  weights[a] = 0.0;
  const int nibbles = (num_modalities + 3) / 4;
  double histogram[kNibbles][16] = {};
  double left_total = 0.0;
  int64_t r = first;
  for (; r < num_rows && rows[2 * r] == n; ++r) {
    check_row(rows, v, r, n, mask);
    const uint32_t subset = static_cast<uint32_t>(rows[2 * r + 1]);
    const int size = popcount32(subset);
    const double value = v[r];
    const double left_out = weights[size] * value;
    const double t = weights[size - 1] * value + left_out;
    left_total += left_out;
    for (int q = 0; q < nibbles; ++q) histogram[q][(subset >> (4 * q)) & 15u] += t;
  }
  for (int m = 0; m < num_modalities; ++m) {
    if (!((mask >> m) & 1u)) continue;
    double with_m = 0.0;
    for (uint32_t pattern = 0; pattern < 16; ++pattern) {
      if ((pattern >> (m & 3)) & 1u) with_m += histogram[m >> 2][pattern];
    }
    totals[m] = with_m - left_total;
  }
  return r;
}

// Monte Carlo coefficients for the rows of sample n starting at `first`; returns one past its
// last row.
int64_t monte_carlo_sample(const int64_t* rows, const float* v, const float* coef, int64_t first,
                           int64_t num_rows, int64_t n, uint32_t mask, int num_modalities,
                           double* totals) {
  int64_t r = first;
  for (; r < num_rows && rows[2 * r] == n; ++r) {
    check_row(rows, v, r, n, mask);
    const double value = v[r];
    const float* row_coef = coef + r * num_modalities;
    for (uint32_t rest = mask; rest != 0; rest &= rest - 1u) {
      const int m = lowest_bit_index(rest);
      totals[m] += static_cast<double>(row_coef[m]) * value;
    }
  }
  return r;
}

}  // namespace

void shapley_from_rows_cpu(const int64_t* rows, const float* v, const float* coef,
                           const int64_t* present, int64_t num_rows, int64_t num_samples,
                           int num_modalities, float* phi) {
  for (int64_t i = 0; i < num_samples * num_modalities; ++i) phi[i] = 0.0f;
  double totals[kMaxModalities + 1];
  int64_t first = 0;
  int64_t previous_sample = -1;
  while (first < num_rows) {
    const int64_t n = rows[2 * first];
    require(n >= 0 && n < num_samples, "rows[", first, "] names sample ", n, ", outside [0, ",
            num_samples, ")");
    require(n > previous_sample, "rows must be grouped by sample in increasing order; rows[",
            first, "] names sample ", n, " after sample ", previous_sample);
    const uint32_t mask = static_cast<uint32_t>(present[n]);
    for (int m = 0; m < num_modalities; ++m) totals[m] = 0.0;
    const int64_t last =
        coef == nullptr
            ? exact_sample(rows, v, first, num_rows, n, mask, num_modalities, totals)
            : monte_carlo_sample(rows, v, coef, first, num_rows, n, mask, num_modalities, totals);
    for (int m = 0; m < num_modalities; ++m) {
      phi[n * num_modalities + m] = static_cast<float>(totals[m]);
    }
    previous_sample = n;
    first = last;
  }
}

}  // namespace mce
