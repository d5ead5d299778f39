// M-RoPE position ids for a batch of spans (text runs and image grids), one launch for every row. Reproduces
// c4u_engine/models/rope.py (mrope_position_ids: transformers' Qwen2_5_VLModel.get_rope_index for images): a text
// token at offset k of its span takes pos_start + k on all three axes; token k of an image span with merged grid
// (t, h, w) takes pos_start + (k / (h w), (k / w) % h, k % w). Slots no span covers (padding) get 0. The spans
// themselves (where each run starts, in slots and in positions) come from the Python face,
// c4u_engine/ops/mrope.py, which reads the token ids on the host.
#pragma once
#include <cstdint>

namespace c4u {

struct MropeArgs {
  const int32_t* row_spans = nullptr;   // [device, int32]: [batch + 1] CSR offsets into the span arrays
  const int32_t* slot_start = nullptr;  // [device, int32]: [n_spans] first slot, increasing within a row
  const int32_t* length = nullptr;      // [device, int32]: [n_spans] slots covered
  const int64_t* pos_start = nullptr;   // [device, int64]: [n_spans] position of the span's first token
  const int32_t* grid = nullptr;        // [device, int32]: [n_spans, 3] merged (t, h, w); (0, 0, 0) for text
  int64_t* out = nullptr;               // [device, int64]: [3, batch, seq] written whole
  int64_t batch = 0, seq = 0;
};

void mrope_positions_cpu(const MropeArgs& a);
void mrope_positions_cuda(const MropeArgs& a, void* stream);  // CUDA builds only

}  // namespace c4u
