// Batched sampling over the vocabulary: argmax, temperature, top-k, top-p, banned first tokens, with a Philox
// counter-based RNG, so the CPU twin (csrc/sampling.cpp), the CUDA kernel (c4u/sampling.cuh, csrc/sampling.cu) and
// the kernel under the SIMT emulator draw the same token for the same seed. Python face: c4u_engine/ops/sampling.py;
// the per-row rules follow c4u_engine/engine/sampling.py (Sampler).
//
// Per row b, with s_i = logits[b, i] / temperature[b] over the allowed tokens (banned ids excluded where
// ban_row[b] != 0):
//   temperature[b] == 0: the token of largest logit (lowest id on ties).
//   top-k (top_k[b] > 0): keep s_i >= the k-th largest s (ties at the cut all stay).
//   top-p (top_p[b] < 1): of the kept, keep s_i >= tau, tau the largest value whose kept mass
//       sum_{s_j >= tau} exp(s_j - max s) reaches top_p[b] of the total (the smallest head set reaching top_p).
//   draw: argmax over the kept of s_i + g_i, g_i = -log(-log(u_i)) (Gumbel-max: token i with probability
//       softmax(s)_i renormalised over the kept), u_i = (23 high bits of Philox4x32-10's first word + 0.5) / 2^23,
//       with key = seed and counter = (i, 0, offsets[b] low, offsets[b] high).
// Every step is exact and order-free (thresholds by bitwise search on integer counts, masses in 2^-40 fixed point
// summed as integers, argmax with lowest-id ties), so results do not depend on thread order; and the float math
// (scaling, exp, log: c4u/sampling_math.h) is IEEE basic operations rounded once each, no libm, no fused
// multiply-add, so the CPU twin, the emulator and the GPU draw the same token bit for bit by construction.
#pragma once
#include <cstdint>

namespace c4u {

struct SamplingArgs {
  const float* logits = nullptr;       // [device, float32]: [batch, vocab]
  const float* temperature = nullptr;  // [device, float32]: [batch], >= 0 (0 = argmax)
  const int32_t* top_k = nullptr;      // [device, int32]: [batch], 0 = no cut
  const float* top_p = nullptr;        // [device, float32]: [batch], in (0, 1]
  const uint64_t* offsets = nullptr;   // [device, uint64]: [batch] Philox counter of each row (e.g. request, step)
  const int32_t* ban_row = nullptr;    // [device, int32]: [batch], != 0: the banned ids are excluded in this row
  const int32_t* banned = nullptr;     // [device, int32]: [n_banned] token ids in [0, vocab)
  int32_t* out = nullptr;              // [device, int32]: [batch] chosen token ids
  int64_t batch = 0, vocab = 0, n_banned = 0;
  uint64_t seed = 0;
};

void sample_cpu(const SamplingArgs& a);
void sample_cuda(const SamplingArgs& a, void* stream);  // CUDA builds only; asynchronous on `stream`

}  // namespace c4u
