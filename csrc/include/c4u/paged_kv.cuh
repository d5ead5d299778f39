// Paged-KV kernels (contracts and argument docs: c4u/paged_kv.h). CUDA source compiled by nvcc (csrc/paged_kv.cu)
// and by the host compiler under the SIMT emulator (csrc/emulated/paged_kv_emulated.cpp). Free of PyTorch and of
// the CUDA runtime API: the launch geometry and the dtype switch live here once, and each launcher passes a
// `launch(kernel, grid, block, dynamic_smem_bytes, args...)` callable (a <<<>>> launch or simt::launch).
// Reference the kernels reproduce: the CPU twin, csrc/paged_kv.cpp.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "c4u/cuda_compat.h"
#include "c4u/paged_kv.h"

namespace c4u {
namespace paged_kv {

constexpr unsigned kThreads = 128;
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kElemsPerBlock = 4096;          // elements one CUDA block copies per append / copy_blocks chunk
constexpr int64_t kMaxTableSmemBytes = 48 * 1024;  // gather stages a block-table row in shared memory

// Word offset of (block, head, slot, 0) in a pool.
__device__ __forceinline__ int64_t pool_offset(const PagedKVLayout& l, int64_t block, int64_t head, int64_t slot) {
  return ((block * l.kv_heads + head) * l.block_size + slot) * l.head_dim;
}

// grid (batch, chunks): block (b, c) copies elements [c * kElemsPerBlock, ...) of row b's append_lens[b] * heads *
// head_dim new elements, flat over (head, token, dim) so that consecutive threads touch consecutive words.
template <class T>
__global__ void append_kernel(PagedKVLayout l, T* pool_k, T* pool_v, const int32_t* block_tables,
                              const int32_t* seq_lens, const int32_t* append_lens, const int32_t* src_start,
                              const T* src_k, const T* src_v, int64_t max_blocks, int64_t src_len) {
  const int64_t b = blockIdx.x;
  const int64_t n_new = append_lens[b], start = seq_lens[b], first = src_start[b];
  const int64_t per_head = n_new * l.head_dim, total = per_head * l.kv_heads;
  const int32_t* table = block_tables + b * max_blocks;
  for (int64_t chunk = blockIdx.y; chunk * kElemsPerBlock < total; chunk += gridDim.y) {
    const int64_t end = (chunk + 1) * kElemsPerBlock < total ? (chunk + 1) * kElemsPerBlock : total;
    for (int64_t i = chunk * kElemsPerBlock + threadIdx.x; i < end; i += blockDim.x) {
      const int64_t h = i / per_head, t = (i % per_head) / l.head_dim, d = i % l.head_dim;
      const int64_t pos = start + t;
      const int64_t dst = pool_offset(l, table[pos / l.block_size], h, pos % l.block_size) + d;
      const int64_t src = ((b * l.kv_heads + h) * src_len + first + t) * l.head_dim + d;
      pool_k[dst] = src_k[src];
      pool_v[dst] = src_v[src];
    }
  }
}

// grid (n, chunks): block (i, c) copies a chunk of the n_slots[i] * head_dim words per head of block src -> dst.
template <class T>
__global__ void copy_blocks_kernel(PagedKVLayout l, T* pool_k, T* pool_v, const int32_t* src_blocks,
                                   const int32_t* dst_blocks, const int32_t* n_slots) {
  const int64_t i = blockIdx.x;
  const int64_t per_head = static_cast<int64_t>(n_slots[i]) * l.head_dim, total = per_head * l.kv_heads;
  const int64_t src_block = src_blocks[i], dst_block = dst_blocks[i];
  for (int64_t e = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const int64_t h = e / per_head, rest = e % per_head;  // rest = slot * head_dim + d
    const int64_t from = pool_offset(l, src_block, h, 0) + rest, to = pool_offset(l, dst_block, h, 0) + rest;
    pool_k[to] = pool_k[from];
    pool_v[to] = pool_v[from];
  }
}

// grid (batch, kv_heads): block (b, h) stages row b of the block table in shared memory once, then writes
// out[b, h, :, :] whole: gathered words for slots < seq_lens[b], zeros after (so the buffer holds no stale data).
template <class T>
__global__ void gather_kernel(PagedKVLayout l, const T* pool_k, const T* pool_v, const int32_t* block_tables,
                              const int32_t* seq_lens, T* out_k, T* out_v, int64_t max_blocks, int64_t out_len) {
  C4U_DYNAMIC_SHARED(int32_t, table);
  const int64_t b = blockIdx.x, h = blockIdx.y;
  const int64_t len = seq_lens[b];
  const int64_t used = (len + l.block_size - 1) / l.block_size;
  for (int64_t i = threadIdx.x; i < used; i += blockDim.x) table[i] = block_tables[b * max_blocks + i];
  __syncthreads();
  const int64_t row = (b * l.kv_heads + h) * out_len * l.head_dim;
  const int64_t filled = len * l.head_dim, total = out_len * l.head_dim;
  for (int64_t e = threadIdx.x; e < total; e += blockDim.x) {
    if (e < filled) {
      const int64_t t = e / l.head_dim, d = e % l.head_dim;
      const int64_t from = pool_offset(l, table[t / l.block_size], h, t % l.block_size) + d;
      out_k[row + e] = pool_k[from];
      out_v[row + e] = pool_v[from];
    } else {
      out_k[row + e] = T(0);
      out_v[row + e] = T(0);
    }
  }
}

inline unsigned chunks(int64_t elements, int64_t per_block) {
  const int64_t c = (elements + per_block - 1) / per_block;
  return static_cast<unsigned>(c < 1 ? 1 : (c > kMaxGridY ? kMaxGridY : c));
}

template <class T, class Launch>
void append_typed(Launch& launch, const PagedKVAppendArgs& a) {
  const dim3 grid(static_cast<unsigned>(a.batch),
                  chunks(a.max_append * a.layout.kv_heads * a.layout.head_dim, kElemsPerBlock));
  launch(append_kernel<T>, grid, dim3(kThreads), size_t(0), a.layout, static_cast<T*>(a.pool_k),
         static_cast<T*>(a.pool_v), a.block_tables, a.seq_lens, a.append_lens, a.src_start,
         static_cast<const T*>(a.src_k), static_cast<const T*>(a.src_v), a.max_blocks, a.src_len);
}

template <class T, class Launch>
void copy_blocks_typed(Launch& launch, const PagedKVCopyArgs& a) {
  const dim3 grid(static_cast<unsigned>(a.n),
                  chunks(a.layout.block_size * a.layout.kv_heads * a.layout.head_dim, kThreads));
  launch(copy_blocks_kernel<T>, grid, dim3(kThreads), size_t(0), a.layout, static_cast<T*>(a.pool_k),
         static_cast<T*>(a.pool_v), a.src_blocks, a.dst_blocks, a.n_slots);
}

template <class T, class Launch>
void gather_typed(Launch& launch, const PagedKVGatherArgs& a) {
  const dim3 grid(static_cast<unsigned>(a.batch), static_cast<unsigned>(a.layout.kv_heads));
  const size_t smem = static_cast<size_t>(a.max_blocks) * sizeof(int32_t);
  launch(gather_kernel<T>, grid, dim3(kThreads), smem, a.layout, static_cast<const T*>(a.pool_k),
         static_cast<const T*>(a.pool_v), a.block_tables, a.seq_lens, static_cast<T*>(a.out_k),
         static_cast<T*>(a.out_v), a.max_blocks, a.out_len);
}

inline void check_launch(const PagedKVLayout& l, int64_t grid_x, const char* op) {
  if (l.elem_bytes != 2 && l.elem_bytes != 4) {
    throw std::invalid_argument(std::string("c4u ") + op + ": elem_bytes must be 2 or 4");
  }
  if (grid_x > 0x7fffffffLL) throw std::invalid_argument(std::string("c4u ") + op + ": batch too large for a grid");
}

// Each entry point is a no-op on an empty batch (a zero-sized grid is a launch error on CUDA).
template <class Launch>
void append(Launch&& launch, const PagedKVAppendArgs& a) {
  check_launch(a.layout, a.batch, "paged_kv_append");
  if (a.batch == 0 || a.max_append == 0) return;
  if (a.layout.elem_bytes == 2) {
    append_typed<uint16_t>(launch, a);
  } else {
    append_typed<uint32_t>(launch, a);
  }
}

template <class Launch>
void copy_blocks(Launch&& launch, const PagedKVCopyArgs& a) {
  check_launch(a.layout, a.n, "paged_kv_copy_blocks");
  if (a.n == 0) return;
  if (a.layout.elem_bytes == 2) {
    copy_blocks_typed<uint16_t>(launch, a);
  } else {
    copy_blocks_typed<uint32_t>(launch, a);
  }
}

template <class Launch>
void gather(Launch&& launch, const PagedKVGatherArgs& a) {
  check_launch(a.layout, a.batch, "paged_kv_gather");
  if (a.max_blocks * static_cast<int64_t>(sizeof(int32_t)) > kMaxTableSmemBytes) {
    throw std::invalid_argument("c4u paged_kv_gather: block tables wider than " +
                                std::to_string(kMaxTableSmemBytes / 4) + " blocks (use larger blocks)");
  }
  if (a.batch == 0 || a.layout.kv_heads == 0) return;
  if (a.layout.elem_bytes == 2) {
    gather_typed<uint16_t>(launch, a);
  } else {
    gather_typed<uint32_t>(launch, a);
  }
}

}  // namespace paged_kv
}  // namespace c4u
