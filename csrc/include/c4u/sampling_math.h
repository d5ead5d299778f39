// Shared arithmetic of the sampling kernels (c4u/sampling.h): Philox4x32-10, the order-preserving key of a float,
// the Gumbel noise and the fixed-point mass. Host and device alike, and bit for bit alike by construction: every
// float operation below is one IEEE-754 basic operation rounded once to nearest (the *_rn helpers), never fused and
// never a libm call. CUDA's expf/logf are not the host's (libdevice vs glibc differ in the last ulp), and nvcc
// contracts a * b + c into one fma by default where the host build (-ffp-contract=off) rounds twice; either would
// let the GPU draw another token than the CPU twin when two candidates' scores are that close.
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

// One rounding each, on the device through the _rn intrinsics (which nvcc never contracts into fma, whatever
// -fmad says), on the host through plain operators (CMakeLists.txt compiles _C and _C_emulated with
// -ffp-contract=off, so no fma either). tests/ops/test_sampling_ptx.py checks the kernel's PTX for this.
C4U_SAMPLING_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
C4U_SAMPLING_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
C4U_SAMPLING_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
C4U_SAMPLING_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
C4U_SAMPLING_HD double dmul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

C4U_SAMPLING_HD float from_bits(uint32_t u) {
  float v;
  memcpy(&v, &u, sizeof(v));
  return v;
}

// exp(x) for x <= 0 (-inf included), from basic operations only: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite, ln2
// split so that k * kLn2Hi is exact), exp(r) by its Taylor polynomial to degree 7 (truncation < 0.1 ulp), times 2^k.
// Within 2 ulp of exp for x > -80 (tests/ops/test_sampling.py sweeps it against float64); 0 below -80, where
// exp(x) < 2^-115: a fixed-point mass (2^-40 units) of such a token is 0 either way.
C4U_SAMPLING_HD float exp_nonpositive(float x) {
  constexpr float kLog2e = 1.44269502f, kLn2Hi = 0.693145751953125f, kLn2Lo = 1.42860677e-06f;
  if (!(x > -80.f)) return 0.f;
  const float k = floorf(add_rn(mul_rn(x, kLog2e), 0.5f));  // in [-116, 0]
  const float r = sub_rn(sub_rn(x, mul_rn(k, kLn2Hi)), mul_rn(k, kLn2Lo));
  float p = 1.f / 5040.f;
  p = add_rn(mul_rn(p, r), 1.f / 720.f);
  p = add_rn(mul_rn(p, r), 1.f / 120.f);
  p = add_rn(mul_rn(p, r), 1.f / 24.f);
  p = add_rn(mul_rn(p, r), 1.f / 6.f);
  p = add_rn(mul_rn(p, r), 0.5f);
  p = add_rn(mul_rn(p, r), 1.f);
  p = add_rn(mul_rn(p, r), 1.f);
  return mul_rn(p, from_bits(static_cast<uint32_t>(static_cast<int32_t>(k) + 127) << 23));  // exact: times 2^k
}

// log(x) for a positive normal float, from basic operations only: x = 2^e m with m in [sqrt(1/2), sqrt(2)),
// log m = 2 atanh(s) = 2s + 2s^3/3 + ... + 2s^9/9 with s = (m - 1) / (m + 1), |s| <= 0.172 (truncation < 0.05 ulp;
// fdlibm's reduction), plus e ln2 in two parts. Within 2 ulp of log (swept in tests/ops/test_sampling.py).
C4U_SAMPLING_HD float log_positive(float x) {
  constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.42860677e-06f, kSqrt2 = 1.41421354f;
  uint32_t u;
  memcpy(&u, &x, sizeof(u));
  int32_t e = static_cast<int32_t>(u >> 23) - 127;
  float m = from_bits((u & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  if (m > kSqrt2) {
    m = mul_rn(m, 0.5f);  // exact
    e += 1;
  }
  const float f = sub_rn(m, 1.f);  // exact (Sterbenz)
  const float s = div_rn(f, add_rn(2.f, f));
  const float z = mul_rn(s, s);
  float q = 2.f / 9.f;
  q = add_rn(mul_rn(q, z), 2.f / 7.f);
  q = add_rn(mul_rn(q, z), 2.f / 5.f);
  q = add_rn(mul_rn(q, z), 2.f / 3.f);
  const float log_m = add_rn(mul_rn(2.f, s), mul_rn(s, mul_rn(z, q)));
  const float ef = static_cast<float>(e);
  return add_rn(mul_rn(ef, kLn2Hi), add_rn(mul_rn(ef, kLn2Lo), log_m));
}

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

// Uniform in (0, 1): 23 random bits, centred, exact in float32: (m + 0.5) / 2^23 in [2^-24, 1 - 2^-24]. (24 bits
// were not exact: m + 0.5 needs 25 significant bits for m >= 2^23, so it rounded to even, and m = 2^24 - 1 gave
// u = 1.0 exactly, Gumbel noise +inf: once in 2^24 draws a kept token won whatever its logit, 0.9% of the rows that
// sample (temperature > 0) over a whole 152k vocabulary.)
C4U_SAMPLING_HD float uniform_of_word(uint32_t x) {
  return mul_rn(add_rn(static_cast<float>(x >> 9), 0.5f), 1.0f / 8388608.0f);  // both steps exact
}

// -log(-log(u)) of one Philox word: u in [2^-24, 1 - 2^-24], so both logs see positive normal floats
// (-log u >= 2^-24), and the noise is finite, in [-2.8, 16.6].
C4U_SAMPLING_HD float gumbel_of_word(uint32_t x) { return -log_positive(-log_positive(uniform_of_word(x))); }

C4U_SAMPLING_HD float gumbel(uint64_t seed, uint64_t offset, uint32_t index) {
  return gumbel_of_word(philox_first(index, 0u, static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                                     static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)));
}

// logits[i] / temperature, the scaled score every step compares (IEEE division on both sides).
C4U_SAMPLING_HD float scaled(float logit, float temperature) { return div_rn(logit, temperature); }

// Monotone map float -> uint32 (larger float, larger key); -inf is the smallest finite-ordered key.
C4U_SAMPLING_HD uint32_t order_key(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// exp(s - max_s) in 2^-40 units; s <= max_s (max_s is the row's largest allowed score).
C4U_SAMPLING_HD uint64_t mass(float s, float max_s) {
  return static_cast<uint64_t>(dmul_rn(static_cast<double>(exp_nonpositive(sub_rn(s, max_s))), kMassScale));
}

// Total fixed-point mass to reach: top_p of `total`, at least 1 so the top token always stays.
C4U_SAMPLING_HD uint64_t mass_target(float top_p, uint64_t total) {
  const uint64_t t = static_cast<uint64_t>(dmul_rn(static_cast<double>(top_p), static_cast<double>(total)));
  return t < 1 ? 1 : t;
}

}  // namespace sampling
}  // namespace c4u
