// Token embeddings with image embeddings merged in: out[t] = image_embeds[image_index[t]] where image_index[t] >= 0
// (an image-pad token), else table[ids[t]], over all tokens of a batch (many rows and images) in one call.
// Reproduces the runners' embed (c4u_engine/runners/onnxruntime_runner.py: take + masked fill in row-major order;
// torch's masked_scatter); the Python face (c4u_engine/ops/embed_merge.py) computes image_index on the host, where
// the token ids live. Rows are copied as 2- or 4-byte words (float16/bfloat16 or float32): no arithmetic.
#pragma once
#include <cstdint>

namespace c4u {

struct EmbedMergeArgs {
  const void* table = nullptr;           // [device, dtype]: [vocab, hidden]
  const int32_t* ids = nullptr;          // [device, int32]: [n_tokens] in [0, vocab)
  const int32_t* image_index = nullptr;  // [device, int32]: [n_tokens], -1 = text, else a row of image_embeds
  const void* image_embeds = nullptr;    // [device, dtype]: [n_image_tokens, hidden]
  void* out = nullptr;                   // [device, dtype]: [n_tokens, hidden]
  int64_t n_tokens = 0, hidden = 0, elem_bytes = 4;
};

void embed_merge_cpu(const EmbedMergeArgs& a);
void embed_merge_cuda(const EmbedMergeArgs& a, void* stream);  // CUDA builds only

}  // namespace c4u
