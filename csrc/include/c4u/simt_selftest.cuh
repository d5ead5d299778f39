// Kernels that test the SIMT emulator itself (tests/ops/test_simt_emulation.py): a block reduction through shared
// memory and barriers, a warp inclusive scan through shuffles, votes and atomics, and a kernel with a barrier
// planted missing, whose result must depend on the schedule. Compiled only under emulation (csrc/emulated/).
#pragma once
#include "c4u/cuda_compat.h"

namespace c4u {
namespace selftest {

// Sum of `in` per block: out[blockIdx.x] = sum(in[blockIdx.x * n_per_block : (blockIdx.x + 1) * n_per_block]).
// Tree reduction in dynamic shared memory (blockDim.x floats, a power of two), then a warp shuffle finish.
//   in  [host, float32]: [gridDim.x * n_per_block];  out [host, float32]: [gridDim.x]
__global__ void block_sum(const float* in, int64_t n_per_block, float* out) {
  C4U_DYNAMIC_SHARED(float, partial);
  const unsigned t = threadIdx.x;
  float acc = 0.f;
  for (int64_t i = t; i < n_per_block; i += blockDim.x) acc += in[blockIdx.x * n_per_block + i];
  partial[t] = acc;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride >= 32; stride /= 2) {
    if (t < stride) partial[t] += partial[t + stride];
    __syncthreads();
  }
  if (t < 32) {
    float v = partial[t];
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (t == 0) out[blockIdx.x] = v;
  }
}

// Inclusive prefix sum of each 32-element run of `in` (one warp per run) with __shfl_up_sync; every warp also
// counts its odd inputs with a ballot, checks __any_sync / __all_sync, and adds the run's total into `total`
// with atomicAdd.
//   in [host, int32]: [n];  out [host, int32]: [n];  odd_count [host, int32]: [n / 32];
//   flags [host, int32]: [n / 32, 2] (any negative, all below 1000);  total [host, int64]: [1]
__global__ void warp_scan(const int32_t* in, int32_t* out, int32_t* odd_count, int32_t* flags,
                          unsigned long long* total) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned lane = threadIdx.x % 32, warp = i / 32;
  int32_t v = in[i];
  const int32_t own = v;
  for (unsigned d = 1; d < 32; d *= 2) {
    const int32_t up = __shfl_up_sync(0xffffffffu, v, d);
    if (lane >= d) v += up;
  }
  out[i] = v;
  const unsigned odd = __ballot_sync(0xffffffffu, own & 1);
  const int any_negative = __any_sync(0xffffffffu, own < 0);
  const int all_small = __all_sync(0xffffffffu, own < 1000);
  const int32_t run_total = __shfl_sync(0xffffffffu, v, 31);
  if (lane == 0) {
    odd_count[warp] = __builtin_popcount(odd);
    flags[2 * warp] = any_negative;
    flags[2 * warp + 1] = all_small;
    atomicAdd(total, static_cast<unsigned long long>(static_cast<int64_t>(run_total)));
  }
}

// Butterfly all-reduce (max) with __shfl_xor_sync over each warp: out[i] = max of its warp's inputs.
//   in [host, float32]: [n];  out [host, float32]: [n]
__global__ void warp_max_xor(const float* in, float* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = in[i];
  for (int m = 16; m > 0; m /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, m));
  out[i] = v;
}

// Rotate each block's values by one through shared memory: out[i] = in[block base + (t + 1) % blockDim.x].
// With with_barrier = 0 the __syncthreads between the write and the read is missing (the planted bug): a thread
// can read its neighbour's slot before the neighbour wrote it.
//   in [host, float32]: [n];  out [host, float32]: [n]
__global__ void rotate_shared(const float* in, float* out, int with_barrier) {
  __shared__ float s[1024];
  const unsigned t = threadIdx.x, base = blockIdx.x * blockDim.x;
  s[t] = in[base + t];
  if (with_barrier) __syncthreads();
  out[base + t] = s[(t + 1) % blockDim.x];
}

// Two block sums in a row through the same 32 shared slots (warp shuffles, then one slot per warp); lane 0 of each
// warp w writes what it read: out[(2 b + pass) * warps + w], sum(in) for pass 0, sum(2 in + 1) for pass 1. With reuse_barrier = 0 the barrier before the second
// reduction writes its slots is missing (the planted bug): a warp that races ahead overwrites a slot another warp
// has not read yet.
//   in [host, float32]: [gridDim.x * blockDim.x];  out [host, float32]: [2 * gridDim.x * blockDim.x / 32]
__global__ void two_sums(const float* in, float* out, int reuse_barrier) {
  __shared__ float slots[32];
  const unsigned t = threadIdx.x;
  const float x = in[blockIdx.x * blockDim.x + t];
  for (int pass = 0; pass < 2; ++pass) {
    float v = pass == 0 ? x : 2.f * x + 1.f;
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (pass == 0 || reuse_barrier) __syncthreads();
    if (t % 32 == 0) slots[t / 32] = v;
    __syncthreads();
    float total = 0.f;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) total += slots[w];
    if (t % 32 == 0) out[(2 * blockIdx.x + pass) * (blockDim.x / 32) + t / 32] = total;
  }
}

// A barrier only some threads reach (t < active): the emulator reports a deadlock instead of hanging.
__global__ void divergent_barrier(float* out, unsigned active) {
  if (threadIdx.x < active) {
    __syncthreads();
    out[threadIdx.x] = 1.f;
  } else {
    __shfl_sync(0xffffffffu, 0.f, 0);
  }
}

#if defined(C4U_SIMT_CUDA_HEADERS) || defined(__CUDACC__)
// Half and bf16 through CUDA's own types: out[b] = sum over the block of float(in_h[i]) * float(in_b[i]), with the
// product rounded to half then bf16 on the way (so the test pins CUDA's rounding, not ours).
//   in_h [host, float16]: [gridDim.x * blockDim.x];  in_b [host, bfloat16]: same;  out [host, float32]: [gridDim.x]
__global__ void half_dot(const __half* in_h, const __nv_bfloat16* in_b, float* out) {
  __shared__ float s[1024];
  const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  const __half p = __hmul(in_h[i], __float2half(__bfloat162float(in_b[i])));
  s[t] = __bfloat162float(__float2bfloat16(__half2float(p)));
  __syncthreads();
  if (t == 0) {
    float acc = 0.f;
    for (unsigned k = 0; k < blockDim.x; ++k) acc += s[k];
    out[blockIdx.x] = acc;
  }
}
#endif

}  // namespace selftest
}  // namespace c4u
