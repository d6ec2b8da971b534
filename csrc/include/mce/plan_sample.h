// Per-sample coalition-plan routines shared by the CPU and CUDA kernels, so that both
// devices produce the same plan, row for row.
#pragma once
#include <cstdint>

#include "mce/bits.h"
#include "mce/philox.h"

namespace mce {

// Marks "no next modality" in a Monte Carlo scratch entry.
constexpr uint32_t kNoModality = 0xFFu;

// Writes the rows (n, S) of every non-empty subset S of `present`, in increasing order of S.
MCE_HD void exact_rows_of_sample(int64_t n, uint32_t present, int64_t* rows) {
  uint32_t subset = 0;
  int64_t r = 0;
  while ((subset = (subset - present) & present) != 0) {
    rows[2 * r] = n;
    rows[2 * r + 1] = subset;
    ++r;
  }
}

// Block b of sample n's random words for permutation k: four 32-bit draws, t = 4 b .. 4 b + 3.
MCE_HD Philox4x32 permutation_block(uint64_t seed, int64_t n, uint32_t k, uint32_t block) {
  Philox4x32 counter;
  counter.v[0] = k;
  counter.v[1] = block;
  counter.v[2] = static_cast<uint32_t>(n);
  counter.v[3] = static_cast<uint32_t>(static_cast<uint64_t>(n) >> 32);
  return philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Writes, for K random permutations of the modalities in `present`, one entry per prefix
// coalition: (coalition << 16) | (modality that joined << 8) | (next modality or kNoModality).
// Permutation k is a Fisher-Yates shuffle of the present modalities in increasing order, draw t
// (t = 0 .. a - 2) choosing the partner of position a - 1 - t.
MCE_HD void mc_prefix_entries(uint32_t present, int64_t n, uint32_t num_permutations, uint64_t seed,
                              uint64_t* entries) {
  int members[kMaxModalities + 1];
  const int a = popcount32(present);
  int64_t e = 0;
  for (uint32_t k = 0; k < num_permutations; ++k) {
    uint32_t rest = present;
    for (int i = 0; i < a; ++i) {
      members[i] = lowest_bit_index(rest);
      rest &= rest - 1u;
    }
    Philox4x32 words{};
    for (int i = a - 1; i >= 1; --i) {
      const uint32_t t = static_cast<uint32_t>(a - 1 - i);
      if ((t & 3u) == 0) words = permutation_block(seed, n, k, t >> 2);
      const int j = static_cast<int>(bounded_draw(words.v[t & 3u], i + 1));
      const int held = members[i];
      members[i] = members[j];
      members[j] = held;
    }
    uint32_t coalition = 0;
    for (int i = 0; i < a; ++i) {
      coalition |= 1u << members[i];
      const uint32_t next = i + 1 < a ? static_cast<uint32_t>(members[i + 1]) : kNoModality;
      entries[e++] = (static_cast<uint64_t>(coalition) << 16) |
                     (static_cast<uint64_t>(members[i]) << 8) | next;
    }
  }
}

// Groups entries by coalition: an LSD radix sort over the 4-bit digits of the coalition (bits
// 16 .. 46 of an entry), stable, with `buffer` (as long as `entries`) as scratch; passes whose
// digit is the same for every entry are skipped. The order inside a coalition is irrelevant to
// the plan (its coefficients are counts), so every device gets the same rows. Digits are 4 bits
// wide so that the histogram is 128 bytes: on a GPU each thread's stack frame is multiplied by
// every resident thread when the driver reserves local memory at the first launch, and a 2 KB
// histogram (8-bit digits) made that reservation about half a GB.
MCE_HD void sort_by_coalition(uint64_t* entries, uint64_t* buffer, int64_t count, uint32_t present) {
  constexpr int kDigitBits = 4;
  constexpr uint32_t kDigits = 1u << kDigitBits;
  uint64_t* source = entries;
  uint64_t* target = buffer;
  const int width = bit_width32(present);
  for (int shift = 16; shift < 16 + width; shift += kDigitBits) {
    int64_t histogram[kDigits];
    for (uint32_t d = 0; d < kDigits; ++d) histogram[d] = 0;
    for (int64_t e = 0; e < count; ++e) ++histogram[(source[e] >> shift) & (kDigits - 1u)];
    if (histogram[(source[0] >> shift) & (kDigits - 1u)] == count) continue;  // one digit: no-op
    int64_t start = 0;
    for (uint32_t d = 0; d < kDigits; ++d) {
      const int64_t size = histogram[d];
      histogram[d] = start;
      start += size;
    }
    for (int64_t e = 0; e < count; ++e) {
      target[histogram[(source[e] >> shift) & (kDigits - 1u)]++] = source[e];
    }
    uint64_t* held = source;
    source = target;
    target = held;
  }
  if (source != entries) {
    for (int64_t e = 0; e < count; ++e) entries[e] = source[e];
  }
}

// Number of distinct coalitions among entries grouped by coalition.
MCE_HD int64_t count_distinct_coalitions(const uint64_t* sorted, int64_t count) {
  int64_t distinct = 0;
  for (int64_t e = 0; e < count; ++e) {
    if (e == 0 || (sorted[e] >> 16) != (sorted[e - 1] >> 16)) ++distinct;
  }
  return distinct;
}

// Writes sample n's prefix entries into entries[0, K |A_n|), groups them by coalition (buffer:
// scratch of the same length) and returns the number of distinct coalitions (rows).
MCE_HD int64_t mc_prepare_sample(uint32_t present, int64_t n, uint32_t num_permutations,
                                 uint64_t seed, uint64_t* entries, uint64_t* buffer) {
  const int64_t count = static_cast<int64_t>(num_permutations) * popcount32(present);
  if (count == 0) return 0;
  mc_prefix_entries(present, n, num_permutations, seed, entries);
  sort_by_coalition(entries, buffer, count, present);
  return count_distinct_coalitions(entries, count);
}

// Turns entries grouped by coalition (increasing) into rows (n, S) and coefficients coef[r, m] = (times m joined S minus
// times m was the next to join S) / K, so that phi[n, m] = sum_r coef[r, m] * v[r].
MCE_HD void mc_rows_of_sample(const uint64_t* sorted, int64_t count, int64_t n,
                              uint32_t num_permutations, int num_modalities, int64_t* rows,
                              float* coef) {
  int counts[kMaxModalities + 1];
  int64_t r = -1;
  for (int64_t e = 0; e < count; ++e) {
    const uint64_t coalition = sorted[e] >> 16;
    if (e == 0 || coalition != (sorted[e - 1] >> 16)) {
      ++r;
      rows[2 * r] = n;
      rows[2 * r + 1] = static_cast<int64_t>(coalition);
      for (int m = 0; m < num_modalities; ++m) counts[m] = 0;
    }
    const uint32_t joined = static_cast<uint32_t>(sorted[e] >> 8) & 0xFFu;
    const uint32_t next = static_cast<uint32_t>(sorted[e]) & 0xFFu;
    counts[joined] += 1;
    if (next != kNoModality) counts[next] -= 1;
    const bool group_ends = e + 1 == count || (sorted[e + 1] >> 16) != coalition;
    if (group_ends) {
      for (int m = 0; m < num_modalities; ++m) {
        coef[r * num_modalities + m] =
            static_cast<float>(counts[m]) / static_cast<float>(num_permutations);
      }
    }
  }
}

}  // namespace mce
