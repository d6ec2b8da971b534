// Masked subset gather and its backward on the GPU.
#include "launch.cuh"
#include "mce/half.h"
#include "ops.h"

namespace mce {
namespace {

// Copies raw element bits (Word = uint32_t for float32, uint16_t for 16-bit types).
template <typename Word>
__global__ void gather_kernel(const Word* h, const int64_t* rows, int64_t num_rows,
                              int num_modalities, int64_t features, Word* out) {
  const int64_t total = num_rows * num_modalities * features;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    const int64_t f = i % features;
    const int64_t m = (i / features) % num_modalities;
    const int64_t r = i / (features * num_modalities);
    const int64_t n = rows[2 * r];
    const bool kept = (static_cast<uint64_t>(rows[2 * r + 1]) >> m) & 1u;
    out[i] = kept ? h[(n * num_modalities + m) * features + f] : Word{0};
  }
}

__global__ void gather_backward_kernel(const void* grad_out, const int64_t* rows,
                                       const int64_t* row_offsets, int64_t num_samples,
                                       int num_modalities, int64_t features, DType dtype,
                                       void* grad_h) {
  const int64_t total = num_samples * num_modalities * features;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    const int64_t f = i % features;
    const int64_t m = (i / features) % num_modalities;
    const int64_t n = i / (features * num_modalities);
    float sum = 0.0f;
    for (int64_t r = row_offsets[n]; r < row_offsets[n + 1]; ++r) {
      if ((static_cast<uint64_t>(rows[2 * r + 1]) >> m) & 1u) {
        sum += load_as_float(grad_out, (r * num_modalities + m) * features + f, dtype);
      }
    }
    store_from_float(grad_h, i, sum, dtype);
  }
}

}  // namespace

void subset_gather_cuda(const void* h, const int64_t* rows, int64_t num_rows, int num_modalities,
                        int64_t features, int dtype, void* out, void* stream) {
  const int64_t total = num_rows * num_modalities * features;
  if (total == 0) return;
  if (static_cast<DType>(dtype) == DType::kFloat32) {
    gather_kernel<uint32_t><<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
        static_cast<const uint32_t*>(h), rows, num_rows, num_modalities, features,
        static_cast<uint32_t*>(out));
  } else {
    gather_kernel<uint16_t><<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
        static_cast<const uint16_t*>(h), rows, num_rows, num_modalities, features,
        static_cast<uint16_t*>(out));
  }
  check_launch("gather_kernel");
}

void subset_gather_backward_cuda(const void* grad_out, const int64_t* rows,
                                 const int64_t* row_offsets, int64_t num_samples,
                                 int num_modalities, int64_t features, int dtype, void* grad_h,
                                 void* stream) {
  const int64_t total = num_samples * num_modalities * features;
  if (total == 0) return;
  gather_backward_kernel<<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
      grad_out, rows, row_offsets, num_samples, num_modalities, features,
      static_cast<DType>(dtype), grad_h);
  check_launch("gather_backward_kernel");
}

}  // namespace mce
