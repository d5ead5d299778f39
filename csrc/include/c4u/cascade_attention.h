// Shared-prefix (cascade) decode attention over paged KV: the contract. Kernel: c4u/cascade_attention.cuh (nvcc:
// csrc/cascade_attention.cu; SIMT emulator: csrc/emulated/cascade_attention_emulated.cpp); CPU twin:
// csrc/cascade_attention.cpp; Python face: c4u_engine/ops/cascade_attention.py (checks every argument first).
//
// One decode step, one query token per row. Rows are grouped (CSR over `group_rows`) by the [prefix + A] KV they
// share: positions [0, shared_lens[g]) of every row of group g are the group's shared blocks (`shared_tables[g]`),
// attended ONCE per group with all the group's rows (x their query heads) as queries; positions
// [shared_lens[g], seq_lens[r]) are row r's own, read through `block_tables[r]` (its full table; entries below
// shared_lens[g] are not read). The two partial softmax states (max m, sum l, unnormalised output o) per (row, query
// head) are merged by log-sum-exp (FlashInfer's cascade inference). This reproduces, per row, softmax(q k^T * scale)
// v over exactly its seq_lens[r] live positions: slots past a length, and padding, are never read. A row with no
// position at all gets zeros. GQA: query head qh reads KV head qh / (q_heads / kv_heads) (transformers' repeat_kv).
// Storage dtype float32, float16 or bfloat16 (elem_bytes 4 or 2 + is_bf16); accumulation in float32.
#pragma once
#include <cstdint>

namespace c4u {

struct CascadeAttentionArgs {
  // Pool layout (c4u/paged_kv.h): [num_blocks, kv_heads, block_size, head_dim].
  int64_t num_blocks = 0, kv_heads = 0, block_size = 0, head_dim = 0;
  int64_t q_heads = 0;      // a multiple of kv_heads
  int64_t elem_bytes = 4;   // 4: float32; 2: float16, or bfloat16 when is_bf16
  bool is_bf16 = false;
  float scale = 1.f;        // softmax scale, usually 1 / sqrt(head_dim)
  const void* q = nullptr;       // [device, dtype]: [rows, q_heads, head_dim]
  const void* pool_k = nullptr;  // [device, dtype]: [num_blocks, kv_heads, block_size, head_dim]
  const void* pool_v = nullptr;  // [device, dtype]: [num_blocks, kv_heads, block_size, head_dim]
  const int32_t* group_rows = nullptr;     // [device, int32]: [groups + 1], 0 = first <= ... <= last = rows
  const int32_t* shared_tables = nullptr;  // [device, int32]: [groups, max_shared_blocks]
  const int32_t* shared_lens = nullptr;    // [device, int32]: [groups]
  const int32_t* block_tables = nullptr;   // [device, int32]: [rows, max_blocks]
  const int32_t* seq_lens = nullptr;       // [device, int32]: [rows], each >= its group's shared_lens
  void* out = nullptr;                     // [device, dtype]: [rows, q_heads, head_dim]
  // [device, float32]: [shared_splits + 1, rows, q_heads, head_dim + 2]: the partial states (o..., m, l) of each
  // split of the shared part (0 .. shared_splits - 1) and of the own part (shared_splits). The CPU twin uses [2, ...].
  float* workspace = nullptr;
  int64_t rows = 0, groups = 0, max_shared_blocks = 0, max_blocks = 0;
  int64_t max_group_rows = 0;  // the largest group's row count (the launch geometry needs it)
  // Split-KV of the shared part (FlashInfer): the kernel cuts each group's shared positions into this many
  // consecutive chunks (whole tiles of 32), scored by separate blocks, so a few groups with long shared parts still
  // fill the GPU; the merge then combines shared_splits + 1 states. >= 1; the CPU twin ignores it (one pass).
  int64_t shared_splits = 1;
};

inline int64_t cascade_attention_workspace_floats(int64_t rows, int64_t q_heads, int64_t head_dim,
                                                  int64_t shared_splits = 1) {
  return (shared_splits + 1) * rows * q_heads * (head_dim + 2);
}

// CPU twin: the same contract on host memory ([device, ...] above reads [host, ...]).
void cascade_attention_cpu(const CascadeAttentionArgs& a);
// CUDA launcher (CUDA builds only): asynchronous on `stream` (a cudaStream_t).
void cascade_attention_cuda(const CascadeAttentionArgs& a, void* stream);

}  // namespace c4u
