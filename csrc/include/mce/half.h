// float16 / bfloat16 <-> float32 conversions by bit manipulation (round to nearest even),
// identical on host and device.
#pragma once
#include <cstdint>
#include <cstring>

#include "mce/bits.h"

namespace mce {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

MCE_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

MCE_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

MCE_HD float bfloat16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

MCE_HD uint16_t float_to_bfloat16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN
  const uint32_t rounding = 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

MCE_HD float float16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1Fu) return bits_float(sign | 0x7F800000u | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0) return bits_float(sign);
    // Subnormal: value = mantissa * 2^-24.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

MCE_HD uint16_t float_to_float16(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t magnitude = u & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u);    // NaN
  if (magnitude >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to inf
  if (magnitude < 0x38800000u) {
    // Result is subnormal (or zero) in float16: round magnitude * 2^24 to an integer.
    if (magnitude < 0x33000000u) return sign;  // below half the smallest subnormal
    const uint32_t exponent = magnitude >> 23;
    const uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - exponent;  // 14 .. 24
    uint32_t value = mantissa >> shift;
    const uint32_t remainder = mantissa & ((1u << shift) - 1u);
    const uint32_t half_way = 1u << (shift - 1u);
    if (remainder > half_way || (remainder == half_way && (value & 1u))) ++value;
    return static_cast<uint16_t>(sign | value);
  }
  uint32_t value = magnitude - 0x38000000u;  // rebias exponent 127 -> 15
  value += 0xFFFu + ((value >> 13) & 1u);
  return static_cast<uint16_t>(sign | (value >> 13));
}

MCE_HD float load_as_float(const void* base, int64_t index, DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return float16_to_float(static_cast<const uint16_t*>(base)[index]);
    case DType::kBFloat16: return bfloat16_to_float(static_cast<const uint16_t*>(base)[index]);
    default: return static_cast<const float*>(base)[index];
  }
}

MCE_HD void store_from_float(void* base, int64_t index, float value, DType dtype) {
  switch (dtype) {
    case DType::kFloat16: static_cast<uint16_t*>(base)[index] = float_to_float16(value); break;
    case DType::kBFloat16: static_cast<uint16_t*>(base)[index] = float_to_bfloat16(value); break;
    default: static_cast<float*>(base)[index] = value;
  }
}

MCE_HD int dtype_size(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

}  // namespace mce
