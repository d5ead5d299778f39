// CPU twin of the sampling kernel (contract: c4u/sampling.h; kernel: c4u/sampling.cuh). The same exact steps, one
// row at a time; OpenMP over rows.
#include <algorithm>
#include <functional>
#include <utility>
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
  const float max_s = sampling::scaled(row[best_index], temperature);
  std::vector<float> s(static_cast<size_t>(a.vocab));
  std::vector<uint32_t> keys;  // keys of the allowed tokens
  keys.reserve(static_cast<size_t>(a.vocab));
  for (int64_t i = 0; i < a.vocab; ++i) {
    s[i] = sampling::scaled(row[i], temperature);
    if (allowed[i]) keys.push_back(order_key(s[i]));
  }

  // The kernel finds its cuts by bitwise search over counts and masses; both cuts are values of some key, so the
  // same keys come out of a selection (top-k) and a sorted walk (top-p) here, in O(vocab log vocab) once.
  uint32_t threshold = 0;
  const int64_t k = a.top_k[b];
  if (k > 0 && k < static_cast<int64_t>(keys.size())) {
    std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<uint32_t>());
    threshold = keys[k - 1];  // the k-th largest key: count(key >= it) >= k, and no larger key has that
  }
  if (a.top_p[b] < 1.f) {
    std::vector<std::pair<uint32_t, uint64_t>> kept;  // (key, fixed-point mass), largest key first
    uint64_t total = 0;
    for (int64_t i = 0; i < a.vocab; ++i) {
      if (!allowed[i] || order_key(s[i]) < threshold) continue;
      kept.emplace_back(order_key(s[i]), sampling::mass(s[i], max_s));
      total += kept.back().second;
    }
    std::sort(kept.begin(), kept.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
    const uint64_t target = sampling::mass_target(a.top_p[b], total);
    uint64_t mass = 0;
    for (size_t j = 0; j < kept.size(); ++j) {
      mass += kept[j].second;
      const bool key_ends = j + 1 == kept.size() || kept[j + 1].first != kept[j].first;
      if (key_ends && mass >= target) {  // the largest cut whose kept mass reaches the target
        if (kept[j].first > threshold) threshold = kept[j].first;
        break;
      }
    }
  }
  float score = 0.f;
  int32_t index = -1;
  for (int64_t i = 0; i < a.vocab; ++i) {
    if (!allowed[i] || order_key(s[i]) < threshold) continue;
    const float g = sampling::add_rn(s[i], sampling::gumbel(a.seed, a.offsets[b], static_cast<uint32_t>(i)));
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
