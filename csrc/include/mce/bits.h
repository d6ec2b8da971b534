// Bit helpers for modality bitmasks, shared by host and device code.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define MCE_HD __host__ __device__ __forceinline__
#else
#define MCE_HD inline
#endif

namespace mce {

// Largest number of modalities a presence bitmask may carry.
constexpr int kMaxModalities = 31;

MCE_HD int popcount32(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __popc(x);
#else
  // Branch-free SWAR count: portable builds may lack the POPCNT instruction.
  x = x - ((x >> 1) & 0x55555555u);
  x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
  x = (x + (x >> 4)) & 0x0F0F0F0Fu;
  return static_cast<int>((x * 0x01010101u) >> 24);
#endif
}

// Deposits the low bits of `k` into the set bits of `mask`, lowest first
// (the software version of x86 PDEP). Increasing k gives increasing submasks.
MCE_HD uint32_t deposit_bits(uint32_t k, uint32_t mask) {
  uint32_t out = 0;
  for (uint32_t bit = 1; mask != 0; bit <<= 1) {
    const uint32_t lowest = mask & (~mask + 1u);
    if (k & bit) out |= lowest;
    mask ^= lowest;
  }
  return out;
}

// Number of bits needed to hold x (0 for 0): one more than the index of the highest set bit.
MCE_HD int bit_width32(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return 32 - __clz(static_cast<int>(x));
#else
  return x == 0 ? 0 : 32 - __builtin_clz(x);
#endif
}

// Index of the lowest set bit; undefined for 0.
MCE_HD int lowest_bit_index(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __ffs(static_cast<int>(x)) - 1;
#else
  return __builtin_ctz(x);
#endif
}

// First row r of rows [R, 2] with rows[r, 0] >= n (R if none), by binary search over the sample
// column. For any rows, not only sorted ones, the result is non-decreasing in n and in [0, R].
MCE_HD int64_t lower_bound_of_sample(const int64_t* rows, int64_t num_rows, int64_t n) {
  int64_t low = 0, high = num_rows;
  while (low < high) {
    const int64_t mid = low + (high - low) / 2;
    if (rows[2 * mid] < n) low = mid + 1; else high = mid;
  }
  return low;
}

}  // namespace mce
