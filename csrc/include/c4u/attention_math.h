// Scalar helpers shared by the attention kernel (c4u/cascade_attention.cuh) and its CPU twin: float16 / bfloat16
// words <-> float (round to nearest even), host and device alike, so both read and round exactly the same way
// without CUDA's headers (the CPU twin has none; on a GPU the intrinsics do the same conversion).
#pragma once
#include <math.h>

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define C4U_ATTN_HD __host__ __device__ inline
#else
#define C4U_ATTN_HD inline
#endif

namespace c4u {
namespace attn {

C4U_ATTN_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, 4);
  return f;
#endif
}

C4U_ATTN_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
#endif
}

C4U_ATTN_HD float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

C4U_ATTN_HD uint16_t float_to_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN stays NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

C4U_ATTN_HD float half_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));  // inf, NaN
  if (exp == 0) {
    const float m = static_cast<float>(mant) * 5.9604644775390625e-08f;  // subnormal: mant * 2^-24
    return sign ? -m : m;
  }
  return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

C4U_ATTN_HD uint16_t float_to_half(float f) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(f));
#else
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);    // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);   // rounds to >= 65520: inf
  if (a < 0x38800000u) {                                                 // below 2^-14: subnormal (or zero)
    // Exact: the float's value times 2^24 is the subnormal mantissa; rint rounds half to even.
    const float m = bits_to_float(a) * 16777216.f;
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(rintf(m)));
  }
  const uint32_t r = a + 0xfffu + ((a >> 13) & 1u);  // round the 13 dropped bits to nearest even
  return static_cast<uint16_t>(sign | ((r - 0x38000000u) >> 13));
#endif
}

// Storage kinds: the dtype switch happens once per launch, the loads are compile-time.
enum Kind { kF32 = 0, kF16 = 1, kBF16 = 2 };

template <int K>
C4U_ATTN_HD float load_word(const void* base, int64_t i) {
  if (K == kF32) return static_cast<const float*>(base)[i];
  const uint16_t h = static_cast<const uint16_t*>(base)[i];
  return K == kBF16 ? bf16_to_float(h) : half_to_float(h);
}

template <int K>
C4U_ATTN_HD void store_word(void* base, int64_t i, float v) {
  if (K == kF32) {
    static_cast<float*>(base)[i] = v;
  } else {
    static_cast<uint16_t*>(base)[i] = K == kBF16 ? float_to_bf16(v) : float_to_half(v);
  }
}

// Merge two partial softmax states (o unnormalised, running max m, sum l) into the normalised output; weight of
// each part exp(m_i - max); an empty part has m = -inf, l = 0. Both empty: 0.
C4U_ATTN_HD float merge_weight(float m_self, float m_other) {
  if (m_self == -INFINITY) return 0.f;
  const float m = m_self > m_other ? m_self : m_other;
  return expf(m_self - m);
}

}  // namespace attn
}  // namespace c4u
