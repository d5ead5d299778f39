// CPU twin of the cascade decode attention kernels (contract: c4u/cascade_attention.h; kernel:
// c4u/cascade_attention.cuh). The same cascade: each group's shared positions are read once for all of its rows'
// queries, each row's own positions once; the (o, m, l) states go through the same workspace and are merged by the
// same log-sum-exp formula. Exact two-pass softmax per part (max first), float32 accumulation; OpenMP over groups.
#include <math.h>

#include <stdexcept>
#include <vector>

#include "c4u/attention_math.h"
#include "c4u/cascade_attention.h"

namespace c4u {
namespace {

template <int K>
void partial(const CascadeAttentionArgs& a, int part, int64_t row_begin, int64_t row_end, int64_t start, int64_t end,
             const int32_t* table) {
  const int64_t D = a.head_dim, ratio = a.q_heads / a.kv_heads, n = end - start;
  std::vector<float> ks(static_cast<size_t>(n * D)), vs(ks.size()), q(static_cast<size_t>(D)), s(n > 0 ? n : 1);
  for (int64_t h = 0; h < a.kv_heads; ++h) {
    for (int64_t t = 0; t < n; ++t) {  // the part's K/V of head h, read once for all its queries
      const int64_t p = start + t;
      const int64_t off = ((static_cast<int64_t>(table[p / a.block_size]) * a.kv_heads + h) * a.block_size +
                           p % a.block_size) * D;
      for (int64_t d = 0; d < D; ++d) {
        ks[t * D + d] = attn::load_word<K>(a.pool_k, off + d);
        vs[t * D + d] = attn::load_word<K>(a.pool_v, off + d);
      }
    }
    for (int64_t row = row_begin; row < row_end; ++row) {
      for (int64_t qh = h * ratio; qh < (h + 1) * ratio; ++qh) {
        for (int64_t d = 0; d < D; ++d) q[d] = attn::load_word<K>(a.q, (row * a.q_heads + qh) * D + d) * a.scale;
        float m = -INFINITY, l = 0.f;
        for (int64_t t = 0; t < n; ++t) {
          float dot = 0.f;
          for (int64_t d = 0; d < D; ++d) dot += q[d] * ks[t * D + d];
          s[t] = dot;
          m = fmaxf(m, dot);
        }
        float* st = a.workspace + ((part * a.rows + row) * a.q_heads + qh) * (D + 2);
        for (int64_t d = 0; d < D; ++d) st[d] = 0.f;
        for (int64_t t = 0; t < n; ++t) {
          const float p = expf(s[t] - m);
          l += p;
          for (int64_t d = 0; d < D; ++d) st[d] += p * vs[t * D + d];
        }
        st[D] = m;
        st[D + 1] = l;
      }
    }
  }
}

template <int K>
void run(const CascadeAttentionArgs& a) {
  const int64_t D = a.head_dim;
#pragma omp parallel for schedule(dynamic)
  for (int64_t g = 0; g < a.groups; ++g) {
    const int64_t begin = a.group_rows[g], end_row = a.group_rows[g + 1], shared = a.shared_lens[g];
    partial<K>(a, 0, begin, end_row, 0, shared, a.shared_tables + g * a.max_shared_blocks);
    for (int64_t r = begin; r < end_row; ++r) partial<K>(a, 1, r, r + 1, shared, a.seq_lens[r],
                                                         a.block_tables + r * a.max_blocks);
  }
#pragma omp parallel for
  for (int64_t r = 0; r < a.rows; ++r) {
    for (int64_t qh = 0; qh < a.q_heads; ++qh) {
      const float* s0 = a.workspace + (r * a.q_heads + qh) * (D + 2);
      const float* s1 = a.workspace + ((a.rows + r) * a.q_heads + qh) * (D + 2);
      const float w0 = attn::merge_weight(s0[D], s1[D]), w1 = attn::merge_weight(s1[D], s0[D]);
      const float den = w0 * s0[D + 1] + w1 * s1[D + 1];
      for (int64_t d = 0; d < D; ++d) {
        const float num = (w0 > 0.f ? w0 * s0[d] : 0.f) + (w1 > 0.f ? w1 * s1[d] : 0.f);
        attn::store_word<K>(a.out, (r * a.q_heads + qh) * D + d, den > 0.f ? num / den : 0.f);
      }
    }
  }
}

}  // namespace

void cascade_attention_cpu(const CascadeAttentionArgs& a) {
  if (a.rows == 0) return;
  if (a.kv_heads < 1 || a.q_heads % a.kv_heads != 0) {
    throw std::invalid_argument("cascade_attention: q_heads must be a multiple of kv_heads");
  }
  if (a.elem_bytes == 4) {
    run<attn::kF32>(a);
  } else if (a.is_bf16) {
    run<attn::kBF16>(a);
  } else {
    run<attn::kF16>(a);
  }
}

}  // namespace c4u
