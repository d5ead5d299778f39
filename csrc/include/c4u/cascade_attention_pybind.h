// The Python signature of cascade decode attention, defined once for c4u_engine._C (CPU twin and CUDA launcher,
// csrc/bindings.cpp) and c4u_engine._C_emulated (CUDA source under the SIMT emulator). Raw addresses as ints; the
// shape as (num_blocks, kv_heads, block_size, head_dim, q_heads, elem_bytes, is_bf16); a stream handle (0 on host);
// shared_splits last (default 1; the CPU twin ignores it).
#pragma once
#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <string>

#include "c4u/cascade_attention.h"

namespace c4u {

template <class Run>
void bind_cascade_attention(pybind11::module_& m, const char* suffix, Run run) {
  namespace py = pybind11;
  m.def(
      ("cascade_attention" + std::string(suffix)).c_str(),
      [run](const std::array<int64_t, 7>& shape, double scale, uintptr_t q, uintptr_t pool_k, uintptr_t pool_v,
            uintptr_t group_rows, int64_t groups, uintptr_t shared_tables, int64_t max_shared_blocks,
            uintptr_t shared_lens, uintptr_t block_tables, int64_t rows, int64_t max_blocks, uintptr_t seq_lens,
            int64_t max_group_rows, uintptr_t out, uintptr_t workspace, uintptr_t stream, int64_t shared_splits) {
        CascadeAttentionArgs a;
        a.num_blocks = shape[0];
        a.kv_heads = shape[1];
        a.block_size = shape[2];
        a.head_dim = shape[3];
        a.q_heads = shape[4];
        a.elem_bytes = shape[5];
        a.is_bf16 = shape[6] != 0;
        a.scale = static_cast<float>(scale);
        a.q = reinterpret_cast<const void*>(q);
        a.pool_k = reinterpret_cast<const void*>(pool_k);
        a.pool_v = reinterpret_cast<const void*>(pool_v);
        a.group_rows = reinterpret_cast<const int32_t*>(group_rows);
        a.groups = groups;
        a.shared_tables = reinterpret_cast<const int32_t*>(shared_tables);
        a.max_shared_blocks = max_shared_blocks;
        a.shared_lens = reinterpret_cast<const int32_t*>(shared_lens);
        a.block_tables = reinterpret_cast<const int32_t*>(block_tables);
        a.rows = rows;
        a.max_blocks = max_blocks;
        a.seq_lens = reinterpret_cast<const int32_t*>(seq_lens);
        a.max_group_rows = max_group_rows;
        a.out = reinterpret_cast<void*>(out);
        a.workspace = reinterpret_cast<float*>(workspace);
        a.shared_splits = shared_splits;
        py::gil_scoped_release release;
        run(a, stream);
      },
      "Shared-prefix (cascade) decode attention over paged KV (c4u/cascade_attention.h)", py::arg("shape"),
      py::arg("scale"), py::arg("q"), py::arg("pool_k"), py::arg("pool_v"), py::arg("group_rows"), py::arg("groups"),
      py::arg("shared_tables"), py::arg("max_shared_blocks"), py::arg("shared_lens"), py::arg("block_tables"),
      py::arg("rows"), py::arg("max_blocks"), py::arg("seq_lens"), py::arg("max_group_rows"), py::arg("out"),
      py::arg("workspace"), py::arg("stream"), py::arg("shared_splits") = 1);
}

}  // namespace c4u
