// CPU twin of the paged-KV kernels (c4u/paged_kv.h): the reference the CUDA source is tested against, and the
// implementation the engine's paged KV store uses on CPU. Runs of head_dim words are contiguous on both sides,
// so each (sequence, head, token) is one memcpy.
#include <cstring>

#include "c4u/paged_kv.h"

namespace c4u {
namespace {

int64_t row_bytes(const PagedKVLayout& l) { return l.head_dim * l.elem_bytes; }

// Byte offset of (block, head, slot, 0) in a pool.
int64_t pool_at(const PagedKVLayout& l, int64_t block, int64_t head, int64_t slot) {
  return ((block * l.kv_heads + head) * l.block_size + slot) * row_bytes(l);
}

}  // namespace

void paged_kv_append_cpu(const PagedKVAppendArgs& a) {
  const PagedKVLayout& l = a.layout;
  const int64_t rb = row_bytes(l);
  auto* pk = static_cast<unsigned char*>(a.pool_k);
  auto* pv = static_cast<unsigned char*>(a.pool_v);
  const auto* sk = static_cast<const unsigned char*>(a.src_k);
  const auto* sv = static_cast<const unsigned char*>(a.src_v);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t h = 0; h < l.kv_heads; ++h) {
      const int32_t* table = a.block_tables + b * a.max_blocks;
      for (int64_t t = 0; t < a.append_lens[b]; ++t) {
        const int64_t pos = a.seq_lens[b] + t;
        const int64_t dst = pool_at(l, table[pos / l.block_size], h, pos % l.block_size);
        const int64_t src = ((b * l.kv_heads + h) * a.src_len + a.src_start[b] + t) * rb;
        std::memcpy(pk + dst, sk + src, static_cast<size_t>(rb));
        std::memcpy(pv + dst, sv + src, static_cast<size_t>(rb));
      }
    }
  }
}

void paged_kv_copy_blocks_cpu(const PagedKVCopyArgs& a) {
  const PagedKVLayout& l = a.layout;
  auto* pk = static_cast<unsigned char*>(a.pool_k);
  auto* pv = static_cast<unsigned char*>(a.pool_v);
  for (int64_t i = 0; i < a.n; ++i) {
    const size_t bytes = static_cast<size_t>(a.n_slots[i] * row_bytes(l));
    for (int64_t h = 0; h < l.kv_heads; ++h) {
      const int64_t from = pool_at(l, a.src_blocks[i], h, 0), to = pool_at(l, a.dst_blocks[i], h, 0);
      std::memcpy(pk + to, pk + from, bytes);
      std::memcpy(pv + to, pv + from, bytes);
    }
  }
}

void paged_kv_gather_cpu(const PagedKVGatherArgs& a) {
  const PagedKVLayout& l = a.layout;
  const int64_t rb = row_bytes(l);
  const auto* pk = static_cast<const unsigned char*>(a.pool_k);
  const auto* pv = static_cast<const unsigned char*>(a.pool_v);
  auto* ok = static_cast<unsigned char*>(a.out_k);
  auto* ov = static_cast<unsigned char*>(a.out_v);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t h = 0; h < l.kv_heads; ++h) {
      const int32_t* table = a.block_tables + b * a.max_blocks;
      const int64_t len = a.seq_lens[b];
      const int64_t row = (b * l.kv_heads + h) * a.out_len * rb;
      for (int64_t t = 0; t < len; ++t) {
        const int64_t from = pool_at(l, table[t / l.block_size], h, t % l.block_size);
        std::memcpy(ok + row + t * rb, pk + from, static_cast<size_t>(rb));
        std::memcpy(ov + row + t * rb, pv + from, static_cast<size_t>(rb));
      }
      const size_t pad = static_cast<size_t>((a.out_len - len) * rb);
      std::memset(ok + row + len * rb, 0, pad);
      std::memset(ov + row + len * rb, 0, pad);
    }
  }
}

}  // namespace c4u
