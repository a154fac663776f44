// Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3", SC'11).
//
// The stream contract (docs/DESIGN.md 2.1), identical on every CPU ISA and on CUDA:
//   key     = (k0, k1) = (low, high) 32 bits of the 64-bit `seed`
//   counter = (c0, c1, c2, c3) = (low, high) 32 bits of (element_index / 4), then (low, high) of `offset`
//   element i takes output word i % 4 of its counter's block.
// Ten rounds with the standard multipliers 0xD2511F53, 0xCD9E8D57 and Weyl key increments
// 0x9E3779B9, 0xBB67AE85; the key is bumped between rounds. Checked against the Random123
// known-answer vectors in tests/test_rng.py.
#pragma once
#include "lanes.h"

SP_NAMESPACE_BEGIN

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;

// The round keys of one seed as lane values, built once per kernel call rather than per block.
template <class U>
struct PhiloxKey {
  U k0[kPhiloxRounds];
  U k1[kPhiloxRounds];

  SP_HD explicit PhiloxKey(uint64_t seed) {
    uint32_t a = static_cast<uint32_t>(seed), b = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < kPhiloxRounds; ++round) {
      k0[round] = U(a);
      k1[round] = U(b);
      a += kPhiloxW0;  // the key schedule: bumped between rounds
      b += kPhiloxW1;
    }
  }
};

// One Philox4x32-10 block, in place on the counter words. U is uint32_t or a SIMD lane type
// (each lane runs its own block; the key is the same for every lane).
template <class U>
SP_HD void philox4x32_10(U& c0, U& c1, U& c2, U& c3, const PhiloxKey<U>& key) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < kPhiloxRounds; ++round) {
    U hi0, lo0, hi1, lo1;
    mulhilo(kPhiloxM0, c0, hi0, lo0);
    mulhilo(kPhiloxM1, c2, hi1, lo1);
    c0 = hi1 ^ c1 ^ key.k0[round];
    c1 = lo1;
    c2 = hi0 ^ c3 ^ key.k1[round];
    c3 = lo0;
  }
}

// The four words of Philox block `block` (= element_index / 4) under (seed, offset), one lane.
SP_HD void philox_block(const PhiloxKey<uint32_t>& key, uint64_t offset, uint64_t block,
                        uint32_t out[4]) {
  uint32_t c0 = static_cast<uint32_t>(block), c1 = static_cast<uint32_t>(block >> 32);
  uint32_t c2 = static_cast<uint32_t>(offset), c3 = static_cast<uint32_t>(offset >> 32);
  philox4x32_10<uint32_t>(c0, c1, c2, c3, key);
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

SP_NAMESPACE_END
