// Exact Shapley weights w(s, a) = s! (a - s - 1)! / a!  (Eq. 5 of the MCE paper).
#pragma once
#include "mce/bits.h"

namespace mce {

// w(s, a) = 1 / (a * C(a - 1, s)); C(30, 15) < 2^53, so the binomial is exact in double.
MCE_HD double shapley_weight(int s, int a) {
  double binom = 1.0;
  const int k = s < a - 1 - s ? s : a - 1 - s;
  for (int i = 1; i <= k; ++i) binom = binom * (a - k + i - 1) / i;
  return 1.0 / (static_cast<double>(a) * binom);
}

// Fills weights[s] = w(s, a) for s = 0 .. a - 1.
MCE_HD void fill_shapley_weights(int a, double* weights) {
  for (int s = 0; s < a; ++s) weights[s] = shapley_weight(s, a);
}

}  // namespace mce
