// The Python signatures of embed_merge and mrope_positions, defined once for c4u_engine._C (CPU twin, CUDA) and
// c4u_engine._C_emulated. Raw addresses as ints; stream 0 on host.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "c4u/embed_merge.h"
#include "c4u/mrope.h"

namespace c4u {

template <class Merge, class Positions>
void bind_embed_mrope(pybind11::module_& m, const char* suffix, Merge merge, Positions positions) {
  namespace py = pybind11;
  const std::string s(suffix);
  m.def(
      ("embed_merge" + s).c_str(),
      [merge](uintptr_t table, uintptr_t ids, uintptr_t image_index, uintptr_t image_embeds, uintptr_t out,
              int64_t n_tokens, int64_t hidden, int64_t elem_bytes, uintptr_t stream) {
        EmbedMergeArgs a;
        a.table = reinterpret_cast<const void*>(table);
        a.ids = reinterpret_cast<const int32_t*>(ids);
        a.image_index = reinterpret_cast<const int32_t*>(image_index);
        a.image_embeds = reinterpret_cast<const void*>(image_embeds);
        a.out = reinterpret_cast<void*>(out);
        a.n_tokens = n_tokens;
        a.hidden = hidden;
        a.elem_bytes = elem_bytes;
        py::gil_scoped_release release;
        merge(a, stream);
      },
      "Token embeddings with image embeddings merged in (c4u/embed_merge.h)", py::arg("table"), py::arg("ids"),
      py::arg("image_index"), py::arg("image_embeds"), py::arg("out"), py::arg("n_tokens"), py::arg("hidden"),
      py::arg("elem_bytes"), py::arg("stream"));
  m.def(
      ("mrope_positions" + s).c_str(),
      [positions](uintptr_t row_spans, uintptr_t slot_start, uintptr_t length, uintptr_t pos_start, uintptr_t grid,
                  uintptr_t out, int64_t batch, int64_t seq, uintptr_t stream) {
        MropeArgs a;
        a.row_spans = reinterpret_cast<const int32_t*>(row_spans);
        a.slot_start = reinterpret_cast<const int32_t*>(slot_start);
        a.length = reinterpret_cast<const int32_t*>(length);
        a.pos_start = reinterpret_cast<const int64_t*>(pos_start);
        a.grid = reinterpret_cast<const int32_t*>(grid);
        a.out = reinterpret_cast<int64_t*>(out);
        a.batch = batch;
        a.seq = seq;
        py::gil_scoped_release release;
        positions(a, stream);
      },
      "M-RoPE position ids of a batch of spans (c4u/mrope.h)", py::arg("row_spans"), py::arg("slot_start"),
      py::arg("length"), py::arg("pos_start"), py::arg("grid"), py::arg("out"), py::arg("batch"), py::arg("seq"),
      py::arg("stream"));
}

}  // namespace c4u
