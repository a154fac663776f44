// Random 32-bit words to uniforms in the open interval (0, 1).
#pragma once
#include "lanes.h"

SP_NAMESPACE_BEGIN

// u = (k + 0.5) * 2^-23 with k the top 23 bits of the word: every step is exact, so u is never 0
// or 1 (it lies in [2^-24, 1 - 2^-24]) and 1 - u is exact too.
template <class F, class U>
SP_HD F uniform_open(U bits) {
  return (s32_to_float(bits >> 9) + F(0.5f)) * F(1.0f / 8388608.0f);
}

SP_NAMESPACE_END
