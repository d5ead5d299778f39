// Embedding-merge kernel (contract: c4u/embed_merge.h; reference: csrc/embed_merge.cpp). grid (token chunks),
// one warp-sized group of threads per token row; compiled by nvcc (csrc/embed_merge.cu) and under the SIMT
// emulator (csrc/emulated/embed_merge_emulated.cpp).
#pragma once
#include <cstdint>
#include <stdexcept>

#include "c4u/cuda_compat.h"
#include "c4u/embed_merge.h"

namespace c4u {
namespace embed_merge {

constexpr unsigned kThreads = 128;
constexpr int64_t kMaxBlocks = 65535;

// Each warp copies whole rows: lane l moves words l, l + 32, ... of its token's row.
template <class T>
__global__ void merge_kernel(const T* table, const int32_t* ids, const int32_t* image_index, const T* image_embeds,
                             T* out, int64_t n_tokens, int64_t hidden) {
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const unsigned lane = threadIdx.x % 32;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; t < n_tokens; t += warps) {
    const int32_t img = image_index[t];
    const T* src = img >= 0 ? image_embeds + img * hidden : table + static_cast<int64_t>(ids[t]) * hidden;
    for (int64_t d = lane; d < hidden; d += 32) out[t * hidden + d] = src[d];
  }
}

template <class T, class Launch>
void merge_typed(Launch& launch, const EmbedMergeArgs& a) {
  const int64_t per_block = kThreads / 32;
  int64_t blocks = (a.n_tokens + per_block - 1) / per_block;
  blocks = blocks > kMaxBlocks ? kMaxBlocks : blocks;
  launch(merge_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), size_t(0),
         static_cast<const T*>(a.table), a.ids, a.image_index, static_cast<const T*>(a.image_embeds),
         static_cast<T*>(a.out), a.n_tokens, a.hidden);
}

template <class Launch>
void merge(Launch&& launch, const EmbedMergeArgs& a) {
  if (a.elem_bytes != 2 && a.elem_bytes != 4) throw std::invalid_argument("c4u embed_merge: elem_bytes 2 or 4");
  if (a.n_tokens == 0 || a.hidden == 0) return;
  if (a.elem_bytes == 2) {
    merge_typed<uint16_t>(launch, a);
  } else {
    merge_typed<uint32_t>(launch, a);
  }
}

}  // namespace embed_merge
}  // namespace c4u
