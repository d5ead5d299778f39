// CPU twin of the sampling kernel (contract: c4u/sampling.h; kernel: c4u/sampling.cuh). The same exact steps, one
// row at a time; OpenMP over rows.
#include <algorithm>
#include <vector>

#include "c4u/sampling.h"
#include "c4u/sampling_math.h"

namespace c4u {
namespace {

using sampling::order_key;

int32_t sample_row(const SamplingArgs& a, int64_t b, std::vector<char>& allowed) {
  const float* row = a.logits + b * a.vocab;
  std::fill(allowed.begin(), allowed.end(), 1);
  if (a.ban_row[b] != 0) {
    for (int64_t k = 0; k < a.n_banned; ++k) allowed[a.banned[k]] = 0;
  }
  int32_t best_index = -1;
  for (int64_t i = 0; i < a.vocab; ++i) {
    if (allowed[i] && (best_index < 0 || row[i] > row[best_index])) best_index = static_cast<int32_t>(i);
  }
  const float temperature = a.temperature[b];
  if (temperature == 0.f) return best_index;
  const float max_s = row[best_index] / temperature;
  std::vector<float> s(static_cast<size_t>(a.vocab));
  for (int64_t i = 0; i < a.vocab; ++i) s[i] = row[i] / temperature;

  uint32_t threshold = 0;
  if (a.top_k[b] > 0) {
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t cand = threshold | (1u << bit);
      int64_t count = 0;
      for (int64_t i = 0; i < a.vocab; ++i) count += allowed[i] && order_key(s[i]) >= cand;
      if (count >= a.top_k[b]) threshold = cand;
    }
  }
  if (a.top_p[b] < 1.f) {
    uint64_t total = 0;
    for (int64_t i = 0; i < a.vocab; ++i) {
      if (allowed[i] && order_key(s[i]) >= threshold) total += sampling::mass(s[i], max_s);
    }
    const uint64_t target = sampling::mass_target(a.top_p[b], total);
    uint32_t cut = 0;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t cand = cut | (1u << bit);
      const uint32_t floor = cand > threshold ? cand : threshold;
      uint64_t kept = 0;
      for (int64_t i = 0; i < a.vocab; ++i) {
        if (allowed[i] && order_key(s[i]) >= floor) kept += sampling::mass(s[i], max_s);
      }
      if (kept >= target) cut = cand;
    }
    if (cut > threshold) threshold = cut;
  }
  float score = 0.f;
  int32_t index = -1;
  for (int64_t i = 0; i < a.vocab; ++i) {
    if (!allowed[i] || order_key(s[i]) < threshold) continue;
    const float g = s[i] + sampling::gumbel(a.seed, a.offsets[b], static_cast<uint32_t>(i));
    if (index < 0 || g > score) {
      score = g;
      index = static_cast<int32_t>(i);
    }
  }
  return index;
}

}  // namespace

void sample_cpu(const SamplingArgs& a) {
#pragma omp parallel
  {
    std::vector<char> allowed(static_cast<size_t>(a.vocab));
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < a.batch; ++b) a.out[b] = sample_row(a, b, allowed);
  }
}

}  // namespace c4u
