// Masked subset gather and its backward on the CPU.
#include <cstring>
#include <vector>

#include "mce/half.h"
#include "ops.h"

namespace mce {

void subset_gather_cpu(const void* h, const int64_t* rows, int64_t num_rows, int num_modalities,
                       int64_t features, int dtype, void* out) {
  const int64_t bytes = features * dtype_size(static_cast<DType>(dtype));
  const char* source = static_cast<const char*>(h);
  char* target = static_cast<char*>(out);
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t n = rows[2 * r];
    const uint64_t subset = static_cast<uint64_t>(rows[2 * r + 1]);
    for (int m = 0; m < num_modalities; ++m) {
      char* slot = target + (r * num_modalities + m) * bytes;
      if ((subset >> m) & 1u) {
        std::memcpy(slot, source + (n * num_modalities + m) * bytes, bytes);
      } else {
        std::memset(slot, 0, bytes);
      }
    }
  }
}

void subset_gather_backward_cpu(const void* grad_out, const int64_t* rows,
                                const int64_t* row_offsets, int64_t num_samples,
                                int num_modalities, int64_t features, int dtype, void* grad_h) {
  const DType type = static_cast<DType>(dtype);
  std::vector<float> total(features);
  for (int64_t n = 0; n < num_samples; ++n) {
    for (int m = 0; m < num_modalities; ++m) {
      std::fill(total.begin(), total.end(), 0.0f);
      for (int64_t r = row_offsets[n]; r < row_offsets[n + 1]; ++r) {
        if (!((static_cast<uint64_t>(rows[2 * r + 1]) >> m) & 1u)) continue;
        const int64_t base = (r * num_modalities + m) * features;
        for (int64_t f = 0; f < features; ++f) total[f] += load_as_float(grad_out, base + f, type);
      }
      const int64_t base = (n * num_modalities + m) * features;
      for (int64_t f = 0; f < features; ++f) store_from_float(grad_h, base + f, total[f], type);
    }
  }
}

}  // namespace mce
