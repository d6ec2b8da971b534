// Coalition plans on the CPU.
#include "mce/bits.h"
#include "mce/errors.h"
#include "mce/plan_sample.h"
#include "ops.h"

namespace mce {

void exact_plan_cpu(const int64_t* present, const int64_t* row_offsets, int64_t num_samples,
                    int64_t num_rows, int64_t* rows) {
  require(row_offsets[num_samples] == num_rows, "exact_plan: row_offsets end at ",
          row_offsets[num_samples], ", expected ", num_rows, " rows");
  for (int64_t n = 0; n < num_samples; ++n) {
    const uint32_t mask = static_cast<uint32_t>(present[n]);
    const int64_t expected = (int64_t{1} << popcount32(mask)) - 1;
    require(row_offsets[n + 1] - row_offsets[n] == expected, "exact_plan: row_offsets of sample ",
            n, " hold ", row_offsets[n + 1] - row_offsets[n], " rows, expected ", expected);
    exact_rows_of_sample(n, mask, rows + 2 * row_offsets[n]);
  }
}

void row_offsets_cpu(const int64_t* rows, int64_t num_rows, int64_t num_samples,
                     int64_t* row_offsets) {
  for (int64_t n = 0; n <= num_samples; ++n) {
    row_offsets[n] = lower_bound_of_sample(rows, num_rows, n);
  }
}

void mc_plan_prepare_cpu(const int64_t* present, const int64_t* scratch_offsets,
                         int64_t num_samples, int64_t num_permutations, uint64_t seed,
                         uint64_t* scratch, int64_t* distinct) {
  uint64_t* buffers = scratch + scratch_offsets[num_samples];
  for (int64_t n = 0; n < num_samples; ++n) {
    const uint32_t mask = static_cast<uint32_t>(present[n]);
    const int64_t count = scratch_offsets[n + 1] - scratch_offsets[n];
    require(count == num_permutations * popcount32(mask), "mc_plan: scratch of sample ", n,
            " holds ", count, " entries, expected ", num_permutations * popcount32(mask));
    distinct[n] = mc_prepare_sample(mask, n, static_cast<uint32_t>(num_permutations), seed,
                                    scratch + scratch_offsets[n], buffers + scratch_offsets[n]);
  }
}

void mc_plan_emit_cpu(const uint64_t* scratch, const int64_t* scratch_offsets,
                      const int64_t* row_offsets, int64_t num_samples, int64_t num_permutations,
                      int num_modalities, int64_t* rows, float* coef) {
  for (int64_t n = 0; n < num_samples; ++n) {
    const int64_t first_row = row_offsets[n];
    mc_rows_of_sample(scratch + scratch_offsets[n], scratch_offsets[n + 1] - scratch_offsets[n], n,
                      static_cast<uint32_t>(num_permutations), num_modalities,
                      rows + 2 * first_row, coef + first_row * num_modalities);
  }
}

}  // namespace mce
