// Shared arithmetic of the sampling kernels (c4u/sampling.h): Philox4x32-10, the order-preserving key of a float,
// the Gumbel noise and the fixed-point mass. Host and device alike.
#pragma once
#include <math.h>

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define C4U_SAMPLING_HD __host__ __device__ inline
#else
#define C4U_SAMPLING_HD inline
#endif

namespace c4u {
namespace sampling {

constexpr double kMassScale = 1099511627776.0;  // 2^40: exp(s - max) in (0, 1] as an integer; sums fit uint64

C4U_SAMPLING_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Philox4x32-10 (Salmon et al., SC'11; Random123 / cuRAND's Philox4_32_10): the first output word.
C4U_SAMPLING_HD uint32_t philox_first(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                                      uint32_t* rest = nullptr) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
    const uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  if (rest != nullptr) {
    rest[0] = c1;
    rest[1] = c2;
    rest[2] = c3;
  }
  return c0;
}

// Uniform in (0, 1): 24 random bits, centred, exact in float32.
C4U_SAMPLING_HD float uniform(uint64_t seed, uint64_t offset, uint32_t index) {
  const uint32_t x = philox_first(index, 0u, static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                                  static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return (static_cast<float>(x >> 8) + 0.5f) * (1.0f / 16777216.0f);
}

C4U_SAMPLING_HD float gumbel(uint64_t seed, uint64_t offset, uint32_t index) {
  return -logf(-logf(uniform(seed, offset, index)));
}

// Monotone map float -> uint32 (larger float, larger key); -inf is the smallest finite-ordered key.
C4U_SAMPLING_HD uint32_t order_key(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

C4U_SAMPLING_HD uint64_t mass(float s, float max_s) {
  return static_cast<uint64_t>(static_cast<double>(expf(s - max_s)) * kMassScale);
}

// Total fixed-point mass to reach: top_p of `total`, at least 1 so the top token always stays.
C4U_SAMPLING_HD uint64_t mass_target(float top_p, uint64_t total) {
  const uint64_t t = static_cast<uint64_t>(static_cast<double>(top_p) * static_cast<double>(total));
  return t < 1 ? 1 : t;
}

}  // namespace sampling
}  // namespace c4u
