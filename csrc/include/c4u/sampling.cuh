// Batched sampling kernel (contract: c4u/sampling.h; reference: the CPU twin, csrc/sampling.cpp). One block per
// row; every step is a block-wide reduction of exact values (max, integer counts and fixed-point masses, argmax
// with lowest-id ties), so the result does not depend on thread order. Any blockDim that is a multiple of 32 works.
// Compiled by nvcc (csrc/sampling.cu) and under the SIMT emulator (csrc/emulated/sampling_emulated.cpp).
#pragma once
#include <cstdint>

#include "c4u/cuda_compat.h"
#include "c4u/sampling.h"
#include "c4u/sampling_math.h"

namespace c4u {
namespace sampling {

constexpr unsigned kFullMask = 0xffffffffu;

// Sum over the block; every thread gets the total. `slots` [32] in shared memory.
template <class T>
__device__ T block_sum(T v, T* slots) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  __syncthreads();  // the previous reduction's readers are done with `slots`
  if (threadIdx.x % 32 == 0) slots[threadIdx.x / 32] = v;
  __syncthreads();
  T total = slots[0];
  for (unsigned w = 1; w < blockDim.x / 32; ++w) total += slots[w];
  return total;
}

// Largest score over the block, lowest index on ties (index -1 = none); every thread gets the winner.
__device__ inline void block_argmax(float& score, int32_t& index, float* score_slots, int32_t* index_slots) {
  for (int o = 16; o > 0; o /= 2) {
    const float s = __shfl_xor_sync(kFullMask, score, o);
    const int32_t i = __shfl_xor_sync(kFullMask, index, o);
    if (i >= 0 && (index < 0 || s > score || (s == score && i < index))) {
      score = s;
      index = i;
    }
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) {
    score_slots[threadIdx.x / 32] = score;
    index_slots[threadIdx.x / 32] = index;
  }
  __syncthreads();
  score = score_slots[0];
  index = index_slots[0];
  for (unsigned w = 1; w < blockDim.x / 32; ++w) {
    const float s = score_slots[w];
    const int32_t i = index_slots[w];
    if (i >= 0 && (index < 0 || s > score || (s == score && i < index))) {
      score = s;
      index = i;
    }
  }
}

__global__ void sample_kernel(SamplingArgs a) {
  __shared__ float score_slots[32];
  __shared__ int32_t index_slots[32];
  __shared__ unsigned long long sum_slots[32];
  const int64_t b = blockIdx.x;
  const float* row = a.logits + b * a.vocab;
  const bool ban = a.ban_row[b] != 0;
  const float temperature = a.temperature[b];
  const uint64_t offset = a.offsets[b];
  auto allowed = [&](int64_t i) {
    if (!ban) return true;
    for (int64_t k = 0; k < a.n_banned; ++k) {
      if (a.banned[k] == i) return false;
    }
    return true;
  };

  // 1. The largest allowed logit: the answer at temperature 0, the softmax shift otherwise.
  float best = 0.f;
  int32_t best_index = -1;
  for (int64_t i = threadIdx.x; i < a.vocab; i += blockDim.x) {
    if (allowed(i) && (best_index < 0 || row[i] > best)) {  // ascending i per thread: ties keep the lower id
      best = row[i];
      best_index = static_cast<int32_t>(i);
    }
  }
  block_argmax(best, best_index, score_slots, index_slots);
  if (temperature == 0.f) {
    if (threadIdx.x == 0) a.out[b] = best_index;
    return;  // uniform across the block: no thread waits at a later barrier
  }
  const float max_s = scaled(best, temperature);

  // 2. top-k: the key of the k-th largest scaled logit, bit by bit (counts are exact).
  uint32_t threshold = 0;
  const int32_t k = a.top_k[b];
  if (k > 0) {
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t cand = threshold | (1u << bit);
      unsigned long long count = 0;
      for (int64_t i = threadIdx.x; i < a.vocab; i += blockDim.x) {
        count += (allowed(i) && order_key(scaled(row[i], temperature)) >= cand) ? 1ull : 0ull;
      }
      if (block_sum(count, sum_slots) >= static_cast<unsigned long long>(k)) threshold = cand;
    }
  }

  // 3. top-p: the largest cut whose kept mass (fixed point, summed exactly) reaches top_p of the total.
  const float top_p = a.top_p[b];
  if (top_p < 1.f) {
    unsigned long long total = 0;
    for (int64_t i = threadIdx.x; i < a.vocab; i += blockDim.x) {
      const float s = scaled(row[i], temperature);
      if (allowed(i) && order_key(s) >= threshold) total += mass(s, max_s);
    }
    const unsigned long long target = mass_target(top_p, block_sum(total, sum_slots));
    uint32_t cut = 0;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t cand = cut | (1u << bit);
      const uint32_t floor = cand > threshold ? cand : threshold;
      unsigned long long kept = 0;
      for (int64_t i = threadIdx.x; i < a.vocab; i += blockDim.x) {
        const float s = scaled(row[i], temperature);
        if (allowed(i) && order_key(s) >= floor) kept += mass(s, max_s);
      }
      if (block_sum(kept, sum_slots) >= target) cut = cand;
    }
    if (cut > threshold) threshold = cut;
  }

  // 4. Gumbel-max over the kept tokens.
  float score = 0.f;
  int32_t index = -1;
  for (int64_t i = threadIdx.x; i < a.vocab; i += blockDim.x) {
    const float s = scaled(row[i], temperature);
    if (!allowed(i) || order_key(s) < threshold) continue;
    const float g = add_rn(s, gumbel(a.seed, offset, static_cast<uint32_t>(i)));
    if (index < 0 || g > score) {
      score = g;
      index = static_cast<int32_t>(i);
    }
  }
  block_argmax(score, index, score_slots, index_slots);
  if (threadIdx.x == 0) a.out[b] = index;
}

// One block of `threads` (a multiple of 32) per row.
template <class Launch>
void sample(Launch&& launch, const SamplingArgs& a, unsigned threads = 256) {
  if (a.batch == 0) return;
  launch(sample_kernel, dim3(static_cast<unsigned>(a.batch)), dim3(threads), size_t(0), a);
}

}  // namespace sampling
}  // namespace c4u
