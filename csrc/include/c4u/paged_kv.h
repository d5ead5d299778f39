// Paged KV cache: per layer, one pool of fixed-size blocks for K and one for V; each sequence owns a block table
// (row of block ids) and a length. Three operations, each with a CPU twin (csrc/paged_kv.cpp), a CUDA launcher
// (csrc/paged_kv.cu) and its kernels (c4u/paged_kv.cuh, also run under the SIMT emulator):
//   append       new K/V of a batch of sequences (different lengths, empty rows allowed) into their blocks;
//   copy_blocks  the first n slots of block src into block dst (copy-on-write of a partly filled last block when
//                a comparison forks a [prefix + A] entry; the block ids and reference counts are the engine's
//                KV store's business: c4u_engine/engine/paged_kv_store.py);
//   gather       sequences' blocks into the contiguous past buffers [batch, kv_heads, out_len, head_dim] the ONNX
//                and TensorRT graphs take (c4u_engine/runners/base.py), right-padded with zeros.
// Python face (argument checks; the kernels trust their arguments): c4u_engine/ops/paged_kv.py.
//
// Pool layout (per layer, K and V alike): [num_blocks, kv_heads, block_size, head_dim], C-contiguous; position p of
// a sequence with block table `table` lives in block table[p / block_size], slot p % block_size. Elements are copied
// as 2- or 4-byte words (float16/bfloat16 or float32): none of these operations does arithmetic.
#pragma once
#include <cstdint>

namespace c4u {

struct PagedKVLayout {
  int64_t num_blocks = 0;
  int64_t kv_heads = 0;
  int64_t block_size = 0;
  int64_t head_dim = 0;
  int64_t elem_bytes = 4;  // 2 (float16, bfloat16) or 4 (float32)
};

// Block tables of a batch: table[b * max_blocks + i] is sequence b's i-th block; `seq_lens[b]` its length.
//   block_tables [device, int32]: [batch, max_blocks];  seq_lens [device, int32]: [batch]
struct PagedKVAppendArgs {
  PagedKVLayout layout;
  void* pool_k = nullptr;              // [device, dtype]: [num_blocks, kv_heads, block_size, head_dim]
  void* pool_v = nullptr;              // [device, dtype]: [num_blocks, kv_heads, block_size, head_dim]
  const int32_t* block_tables = nullptr;  // [device, int32]: [batch, max_blocks]
  const int32_t* seq_lens = nullptr;      // [device, int32]: [batch] length before the append
  const int32_t* append_lens = nullptr;   // [device, int32]: [batch] tokens to append (0 = empty row)
  const int32_t* src_start = nullptr;     // [device, int32]: [batch] first source slot of each row
  const void* src_k = nullptr;            // [device, dtype]: [batch, kv_heads, src_len, head_dim]
  const void* src_v = nullptr;            // [device, dtype]: [batch, kv_heads, src_len, head_dim]
  int64_t batch = 0, max_blocks = 0, src_len = 0;
  int64_t max_append = 0;  // max of append_lens (host value; sizes the grid)
};

struct PagedKVCopyArgs {
  PagedKVLayout layout;
  void* pool_k = nullptr;               // [device, dtype]: [num_blocks, kv_heads, block_size, head_dim]
  void* pool_v = nullptr;               // [device, dtype]: [num_blocks, kv_heads, block_size, head_dim]
  const int32_t* src_blocks = nullptr;  // [device, int32]: [n]
  const int32_t* dst_blocks = nullptr;  // [device, int32]: [n], disjoint from src_blocks
  const int32_t* n_slots = nullptr;     // [device, int32]: [n] leading slots copied (<= block_size)
  int64_t n = 0;
};

struct PagedKVGatherArgs {
  PagedKVLayout layout;
  const void* pool_k = nullptr;           // [device, dtype]: [num_blocks, kv_heads, block_size, head_dim]
  const void* pool_v = nullptr;           // [device, dtype]: [num_blocks, kv_heads, block_size, head_dim]
  const int32_t* block_tables = nullptr;  // [device, int32]: [batch, max_blocks]
  const int32_t* seq_lens = nullptr;      // [device, int32]: [batch], each <= out_len
  void* out_k = nullptr;                  // [device, dtype]: [batch, kv_heads, out_len, head_dim]
  void* out_v = nullptr;                  // [device, dtype]: [batch, kv_heads, out_len, head_dim]
  int64_t batch = 0, max_blocks = 0, out_len = 0;
};

// CPU twins: the same contracts on host memory ([device, ...] above reads [host, ...]).
void paged_kv_append_cpu(const PagedKVAppendArgs& a);
void paged_kv_copy_blocks_cpu(const PagedKVCopyArgs& a);
void paged_kv_gather_cpu(const PagedKVGatherArgs& a);

// CUDA launchers (CUDA builds only): asynchronous on `stream` (a cudaStream_t).
void paged_kv_append_cuda(const PagedKVAppendArgs& a, void* stream);
void paged_kv_copy_blocks_cuda(const PagedKVCopyArgs& a, void* stream);
void paged_kv_gather_cuda(const PagedKVGatherArgs& a, void* stream);

}  // namespace c4u
