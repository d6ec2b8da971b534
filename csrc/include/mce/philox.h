// Philox4x32-10 counter-based generator (Salmon et al., SC 2011), identical on host and device.
#pragma once
#include <cstdint>

#include "mce/bits.h"

namespace mce {

struct Philox4x32 {
  uint32_t v[4];
};

MCE_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(product >> 32);
  return static_cast<uint32_t>(product);
}

// Ten rounds of Philox4x32 on `counter` with the 64-bit `key` (k0, k1).
MCE_HD Philox4x32 philox4x32_10(Philox4x32 counter, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(kMul0, counter.v[0], &hi0);
    const uint32_t lo1 = mulhilo32(kMul1, counter.v[2], &hi1);
    counter.v[0] = hi1 ^ counter.v[1] ^ k0;
    counter.v[1] = lo1;
    counter.v[2] = hi0 ^ counter.v[3] ^ k1;
    counter.v[3] = lo0;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return counter;
}

// Uniform integer in [0, bound) from a 32-bit draw (Lemire's multiply-shift).
MCE_HD uint32_t bounded_draw(uint32_t draw, uint32_t bound) {
  return static_cast<uint32_t>((static_cast<uint64_t>(draw) * bound) >> 32);
}

}  // namespace mce
