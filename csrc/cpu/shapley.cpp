// Shapley aggregation phi[n, m] = sum_r coef[r, m] * v[r] on the CPU.
#include <cmath>

#include "mce/bits.h"
#include "mce/errors.h"
#include "mce/shapley_weights.h"
#include "ops.h"

namespace mce {
namespace {

constexpr int kNibbles = (kMaxModalities + 3) / 4;

// Whether row r may be aggregated into sample n: it names n, holds a non-empty subset of the
// sample's present set (so 1 <= |S| <= a and the weight lookups stay in bounds) and a finite
// utility.
inline bool row_is_valid(const int64_t* rows, const float* v, int64_t r, int64_t n,
                         uint32_t mask) {
  const int64_t subset = rows[2 * r + 1];
  return rows[2 * r] == n && subset > 0 && (subset & ~static_cast<int64_t>(mask)) == 0 &&
         std::isfinite(v[r]);
}

// Exact weights (Eq. 5) for sample n's rows [first, last); returns the first invalid row, or
// `last`. With t_S = w(|S|-1, a) v(S) + w(|S|, a) v(S) and L = sum_S w(|S|, a) v(S)
// (w(a, a) = 0): phi_m = sum_{S containing m} t_S - L.
// The sums over S containing m are read off per-nibble histograms of t: each row adds t to one
// bucket per 4 modalities, so a row costs O(M / 4) adds instead of O(M) branches.
int64_t exact_sample(const int64_t* rows, const float* v, int64_t first, int64_t last, int64_t n,
                     uint32_t mask, int num_modalities, double* totals) {
  double weights[kMaxModalities + 2];
  const int a = popcount32(mask);
  fill_shapley_weights(a, weights);
  weights[a] = 0.0;
  const int nibbles = (num_modalities + 3) / 4;
  double histogram[kNibbles][16] = {};
  double left_total = 0.0;
  for (int64_t r = first; r < last; ++r) {
    if (!row_is_valid(rows, v, r, n, mask)) return r;
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
  return last;
}

// Monte Carlo coefficients for sample n's rows [first, last); returns the first invalid row, or
// `last`.
int64_t monte_carlo_sample(const int64_t* rows, const float* v, const float* coef, int64_t first,
                           int64_t last, int64_t n, uint32_t mask, int num_modalities,
                           double* totals) {
  for (int64_t r = first; r < last; ++r) {
    if (!row_is_valid(rows, v, r, n, mask)) return r;
    const double value = v[r];
    const float* row_coef = coef + r * num_modalities;
    for (uint32_t rest = mask; rest != 0; rest &= rest - 1u) {
      const int m = lowest_bit_index(rest);
      totals[m] += static_cast<double>(row_coef[m]) * value;
    }
  }
  return last;
}

}  // namespace

void shapley_from_rows_cpu(const int64_t* rows, const float* v, const float* coef,
                           const int64_t* present, const int64_t* row_offsets, int64_t num_rows,
                           int64_t num_samples, int num_modalities, float* phi,
                           int64_t* first_bad_row) {
  require(num_modalities >= 1 && num_modalities <= kMaxModalities,
          "shapley_from_rows: num_modalities must be in [1, ", kMaxModalities, "], got ",
          num_modalities);
  // The offsets cover [0, R) in order unless a row breaks the grouping; a gap at either end is
  // reported as its first row.
  if (row_offsets[0] != 0) {
    *first_bad_row = 0;
    return;
  }
  double totals[kMaxModalities + 1];
  for (int64_t n = 0; n < num_samples; ++n) {
    const int64_t first = row_offsets[n];
    const int64_t last = row_offsets[n + 1];
    require(first <= last && last <= num_rows, "shapley_from_rows: row_offsets[", n, " : ", n + 2,
            "] = [", first, ", ", last, "] are not non-decreasing within [0, ", num_rows, "]");
    const uint32_t mask = static_cast<uint32_t>(present[n]);
    for (int m = 0; m < num_modalities; ++m) totals[m] = 0.0;
    const int64_t stop =
        coef == nullptr
            ? exact_sample(rows, v, first, last, n, mask, num_modalities, totals)
            : monte_carlo_sample(rows, v, coef, first, last, n, mask, num_modalities, totals);
    if (stop != last) {
      *first_bad_row = stop;
      return;
    }
    for (int m = 0; m < num_modalities; ++m) {
      phi[n * num_modalities + m] = static_cast<float>(totals[m]);
    }
  }
  const int64_t end = row_offsets[num_samples];
  if (end != num_rows) *first_bad_row = end < num_rows ? end : num_rows;
}

}  // namespace mce
