// Shared-prefix (cascade) decode attention kernels (contract and argument docs: c4u/cascade_attention.h; reference:
// the CPU twin, csrc/cascade_attention.cpp). CUDA source compiled by nvcc (csrc/cascade_attention.cu) and by the host
// compiler under the SIMT emulator (csrc/emulated/cascade_attention_emulated.cpp). Free of PyTorch and the CUDA
// runtime API; each launcher passes a `launch(kernel, grid, block, dynamic_smem_bytes, args...)` callable.
//
// Three launches on one stream:
//   1. partial_kernel<part 0>, grid (groups x shared_splits, kv_heads, query chunks): a block stages tiles of 32
//      shared slots of one KV head in shared memory (as float) ONCE and scores up to 16 queries against them (the
//      group's rows x the query heads of that KV head): the shared [prefix + A] is read once per group and chunk,
//      not once per row. With shared_splits > 1 each block takes one consecutive chunk of the shared positions
//      (split-KV: more blocks in flight when there are few groups but long shared parts).
//   2. partial_kernel<part 1>, grid (rows, kv_heads, query chunks): the same over each row's own positions.
//   3. merge_kernel, grid (rows): log-sum-exp merge of the shared_splits + 1 states into out.
// Inside partial_kernel, warp w owns queries 4w .. 4w + 3; lane t scores slot t of the tile, then the warp runs the
// online softmax (running max m, sum l, unnormalised o; each lane owns dims lane, lane + 32, ...).
#pragma once
#include <math.h>

#include <cstdint>
#include <stdexcept>

#include "c4u/attention_math.h"
#include "c4u/cascade_attention.h"
#include "c4u/cuda_compat.h"

namespace c4u {
namespace cascade {

constexpr unsigned kThreads = 128;  // 4 warps
constexpr int kTile = 32;           // slots per shared-memory tile: one per lane
constexpr int kQueriesPerWarp = 4;
constexpr int kQueriesPerBlock = kQueriesPerWarp * static_cast<int>(kThreads / 32);
constexpr int kMaxDimsPerLane = 4;  // head_dim <= 128
constexpr int64_t kMaxHeadDim = 32 * kMaxDimsPerLane;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int64_t kMaxSharedSplits = 64;

inline size_t partial_smem_bytes(int64_t head_dim) {
  // K and V tiles [kTile, head_dim + 1] (the +1 staggers the rows across banks), queries [16, head_dim].
  return sizeof(float) * static_cast<size_t>(2 * kTile * (head_dim + 1) + kQueriesPerBlock * head_dim);
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// part 0: group g = blockIdx.x / shared_splits, split j = blockIdx.x % shared_splits: positions [j c, (j + 1) c)
//         of [0, shared_lens[g]) through shared_tables[g], rows of the group (c: the split's length, whole tiles).
// part 1: segment = row blockIdx.x, positions [shared_lens[its group], seq_lens[r]) through block_tables[r].
// Writes the state (o[head_dim], m, l) of each of its queries to workspace[j or shared_splits, row, query head];
// an empty range writes (0, -inf, 0), which the merge weighs 0.
template <int K>
__global__ void partial_kernel(CascadeAttentionArgs a, int part) {
  C4U_DYNAMIC_SHARED(float, smem);
  const int64_t D = a.head_dim, stride = D + 1;
  float* ks = smem;
  float* vs = ks + kTile * stride;
  float* qs = vs + kTile * stride;
  const int64_t splits = a.shared_splits, h = blockIdx.y;
  const int64_t seg = part == 0 ? blockIdx.x / splits : blockIdx.x;
  const int64_t ratio = a.q_heads / a.kv_heads;
  int64_t row_begin, row_end, start, end, slot;
  const int32_t* table;
  if (part == 0) {
    row_begin = a.group_rows[seg];
    row_end = a.group_rows[seg + 1];
    const int64_t len = a.shared_lens[seg], split = blockIdx.x % splits;
    const int64_t chunk = ((len + splits - 1) / splits + kTile - 1) / kTile * kTile;  // whole tiles per split
    start = split * chunk < len ? split * chunk : len;
    end = start + chunk < len ? start + chunk : len;
    slot = split;
    table = a.shared_tables + seg * a.max_shared_blocks;
  } else {
    int64_t lo = 0, hi = a.groups;  // the group g with group_rows[g] <= seg < group_rows[g + 1]
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (a.group_rows[mid] <= seg) lo = mid; else hi = mid;
    }
    row_begin = seg;
    row_end = seg + 1;
    start = a.shared_lens[lo];
    end = a.seq_lens[seg];
    slot = splits;
    table = a.block_tables + seg * a.max_blocks;
  }
  const int64_t n_q = (row_end - row_begin) * ratio, q0 = static_cast<int64_t>(blockIdx.z) * kQueriesPerBlock;
  if (q0 >= n_q) return;  // the whole block leaves together, before any barrier
  const int64_t nq = n_q - q0 < kQueriesPerBlock ? n_q - q0 : kQueriesPerBlock;

  for (int64_t e = threadIdx.x; e < kQueriesPerBlock * D; e += blockDim.x) {
    const int64_t i = e / D, d = e % D;
    float v = 0.f;
    if (i < nq) {
      const int64_t gi = q0 + i, row = row_begin + gi / ratio, qh = h * ratio + gi % ratio;
      v = attn::load_word<K>(a.q, (row * a.q_heads + qh) * D + d) * a.scale;  // pre-scaled once
    }
    qs[e] = v;
  }

  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  float m[kQueriesPerWarp], l[kQueriesPerWarp], o[kQueriesPerWarp][kMaxDimsPerLane];
  for (int j = 0; j < kQueriesPerWarp; ++j) {
    m[j] = -INFINITY;
    l[j] = 0.f;
    for (int k = 0; k < kMaxDimsPerLane; ++k) o[j][k] = 0.f;
  }

  for (int64_t tile = start; tile < end; tile += kTile) {
    __syncthreads();  // the queries are staged; the previous tile's readers are done
    for (int64_t e = threadIdx.x; e < kTile * D; e += blockDim.x) {
      const int64_t t = e / D, d = e % D, p = tile + t;
      float kv = 0.f, vv = 0.f;  // slots past `end` are zero, never read from the pool (they may be garbage)
      if (p < end) {
        const int64_t off = ((static_cast<int64_t>(table[p / a.block_size]) * a.kv_heads + h) * a.block_size +
                             p % a.block_size) * D + d;
        kv = attn::load_word<K>(a.pool_k, off);
        vv = attn::load_word<K>(a.pool_v, off);
      }
      ks[t * stride + d] = kv;
      vs[t * stride + d] = vv;
    }
    __syncthreads();
    const int n_valid = end - tile < kTile ? static_cast<int>(end - tile) : kTile;
    for (int j = 0; j < kQueriesPerWarp; ++j) {
      const int i = warp * kQueriesPerWarp + j;
      if (i >= nq) break;  // warp-uniform: the shuffles below see the whole warp
      float s = -INFINITY;
      if (lane < n_valid) {
        s = 0.f;
        for (int64_t d = 0; d < D; ++d) s += qs[i * D + d] * ks[lane * stride + d];
      }
      const float m_new = fmaxf(m[j], warp_max(s));  // finite: the tile has at least one live slot
      const float p = lane < n_valid ? expf(s - m_new) : 0.f;
      const float corr = m[j] == -INFINITY ? 0.f : expf(m[j] - m_new);
      l[j] = l[j] * corr + warp_sum(p);
      for (int k = 0; k < kMaxDimsPerLane; ++k) o[j][k] *= corr;
      for (int t = 0; t < n_valid; ++t) {
        const float pt = __shfl_sync(kFullMask, p, t);
        for (int k = 0; k < kMaxDimsPerLane; ++k) {
          const int64_t d = lane + 32 * k;
          if (d < D) o[j][k] += pt * vs[t * stride + d];
        }
      }
      m[j] = m_new;
    }
  }

  for (int j = 0; j < kQueriesPerWarp; ++j) {
    const int64_t i = warp * kQueriesPerWarp + j;
    if (i >= nq) break;
    const int64_t gi = q0 + i, row = row_begin + gi / ratio, qh = h * ratio + gi % ratio;
    float* st = a.workspace + ((slot * a.rows + row) * a.q_heads + qh) * (D + 2);
    for (int k = 0; k < kMaxDimsPerLane; ++k) {
      const int64_t d = lane + 32 * k;
      if (d < D) st[d] = o[j][k];
    }
    if (lane == 0) {
      st[D] = m[j];
      st[D + 1] = l[j];
    }
  }
}

// grid (rows): out[r, qh, d] = sum_i w_i o_i / sum_i w_i l_i over the shared_splits + 1 states (the shared splits,
// then the own part), w_i = exp(m_i - max_j m_j) (0 for an empty state); 0 for a row with no position. With one
// split this is merge_weight's two-state formula, term for term.
template <int K>
__global__ void merge_kernel(CascadeAttentionArgs a) {
  const int64_t r = blockIdx.x, D = a.head_dim, parts = a.shared_splits + 1;
  const int64_t part_stride = a.rows * a.q_heads * (D + 2);
  for (int64_t e = threadIdx.x; e < a.q_heads * D; e += blockDim.x) {
    const int64_t qh = e / D, d = e % D;
    const float* s0 = a.workspace + (r * a.q_heads + qh) * (D + 2);
    float m = -INFINITY;
    for (int64_t i = 0; i < parts; ++i) m = fmaxf(m, s0[i * part_stride + D]);
    float den = 0.f, num = 0.f;
    for (int64_t i = 0; i < parts; ++i) {
      const float* si = s0 + i * part_stride;
      const float w = attn::merge_weight(si[D], m);
      den += w * si[D + 1];
      num += w > 0.f ? w * si[d] : 0.f;
    }
    attn::store_word<K>(a.out, (r * a.q_heads + qh) * D + d, den > 0.f ? num / den : 0.f);
  }
}

inline unsigned query_chunks(int64_t queries) {
  const int64_t c = (queries + kQueriesPerBlock - 1) / kQueriesPerBlock;
  return static_cast<unsigned>(c < 1 ? 1 : c);
}

template <int K, class Launch>
void run_typed(Launch& launch, const CascadeAttentionArgs& a) {
  const int64_t ratio = a.q_heads / a.kv_heads;
  const size_t smem = partial_smem_bytes(a.head_dim);
  const dim3 block(kThreads);
  if (a.groups > 0) {
    launch(partial_kernel<K>, dim3(static_cast<unsigned>(a.groups * a.shared_splits),
                                   static_cast<unsigned>(a.kv_heads), query_chunks(a.max_group_rows * ratio)),
           block, smem, a, 0);
  }
  launch(partial_kernel<K>, dim3(static_cast<unsigned>(a.rows), static_cast<unsigned>(a.kv_heads),
                                 query_chunks(ratio)),
         block, smem, a, 1);
  launch(merge_kernel<K>, dim3(static_cast<unsigned>(a.rows)), block, size_t(0), a);
}

// Entry point of every launcher. Arguments are checked by c4u_engine/ops/cascade_attention.py; these throws guard
// direct C++ callers against the geometry the kernels cannot take.
template <class Launch>
void run(Launch launch, const CascadeAttentionArgs& a) {
  if (a.rows == 0) return;
  if (a.head_dim < 1 || a.head_dim > kMaxHeadDim) throw std::invalid_argument("cascade_attention: head_dim > 128");
  if (a.kv_heads < 1 || a.q_heads % a.kv_heads != 0) {
    throw std::invalid_argument("cascade_attention: q_heads must be a multiple of kv_heads");
  }
  if (a.shared_splits < 1 || a.shared_splits > kMaxSharedSplits) {
    throw std::invalid_argument("cascade_attention: shared_splits must be in [1, 64]");
  }
  if (a.elem_bytes == 4) {
    run_typed<attn::kF32>(launch, a);
  } else if (a.is_bf16) {
    run_typed<attn::kBF16>(launch, a);
  } else {
    run_typed<attn::kF16>(launch, a);
  }
}

}  // namespace cascade
}  // namespace c4u
