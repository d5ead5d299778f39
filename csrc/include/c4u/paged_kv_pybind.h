// The Python signatures of the paged-KV operations, defined once for c4u_engine._C (CPU twin and CUDA launcher,
// csrc/bindings.cpp) and c4u_engine._C_emulated (CUDA source under the SIMT emulator). Raw addresses as ints,
// the pool layout as (num_blocks, kv_heads, block_size, head_dim, elem_bytes), and a stream handle (0 on host).
#pragma once
#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>

#include "c4u/paged_kv.h"

namespace c4u {

using PagedKVLayoutTuple = std::array<int64_t, 5>;

inline PagedKVLayout paged_kv_layout(const PagedKVLayoutTuple& t) {
  PagedKVLayout l;
  l.num_blocks = t[0];
  l.kv_heads = t[1];
  l.block_size = t[2];
  l.head_dim = t[3];
  l.elem_bytes = t[4];
  return l;
}

template <class T>
T* as_ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

// Each callable takes (args, stream) and runs the operation; `suffix` names the variant ("_cpu", "_cuda", "").
template <class Append, class Copy, class Gather>
void bind_paged_kv(pybind11::module_& m, const char* suffix, Append append, Copy copy, Gather gather) {
  namespace py = pybind11;
  const std::string s(suffix);
  m.def(
      ("paged_kv_append" + s).c_str(),
      [append](const PagedKVLayoutTuple& layout, uintptr_t pool_k, uintptr_t pool_v, uintptr_t block_tables,
               int64_t batch, int64_t max_blocks, uintptr_t seq_lens, uintptr_t append_lens, uintptr_t src_start,
               uintptr_t src_k, uintptr_t src_v, int64_t src_len, int64_t max_append, uintptr_t stream) {
        PagedKVAppendArgs a;
        a.layout = paged_kv_layout(layout);
        a.pool_k = as_ptr<void>(pool_k);
        a.pool_v = as_ptr<void>(pool_v);
        a.block_tables = as_ptr<const int32_t>(block_tables);
        a.seq_lens = as_ptr<const int32_t>(seq_lens);
        a.append_lens = as_ptr<const int32_t>(append_lens);
        a.src_start = as_ptr<const int32_t>(src_start);
        a.src_k = as_ptr<const void>(src_k);
        a.src_v = as_ptr<const void>(src_v);
        a.batch = batch;
        a.max_blocks = max_blocks;
        a.src_len = src_len;
        a.max_append = max_append;
        py::gil_scoped_release release;
        append(a, stream);
      },
      "Append new K/V rows into their blocks (c4u/paged_kv.h)", py::arg("layout"), py::arg("pool_k"),
      py::arg("pool_v"), py::arg("block_tables"), py::arg("batch"), py::arg("max_blocks"), py::arg("seq_lens"),
      py::arg("append_lens"), py::arg("src_start"), py::arg("src_k"), py::arg("src_v"), py::arg("src_len"),
      py::arg("max_append"), py::arg("stream"));
  m.def(
      ("paged_kv_copy_blocks" + s).c_str(),
      [copy](const PagedKVLayoutTuple& layout, uintptr_t pool_k, uintptr_t pool_v, uintptr_t src_blocks,
             uintptr_t dst_blocks, uintptr_t n_slots, int64_t n, uintptr_t stream) {
        PagedKVCopyArgs a;
        a.layout = paged_kv_layout(layout);
        a.pool_k = as_ptr<void>(pool_k);
        a.pool_v = as_ptr<void>(pool_v);
        a.src_blocks = as_ptr<const int32_t>(src_blocks);
        a.dst_blocks = as_ptr<const int32_t>(dst_blocks);
        a.n_slots = as_ptr<const int32_t>(n_slots);
        a.n = n;
        py::gil_scoped_release release;
        copy(a, stream);
      },
      "Copy the leading slots of blocks (copy-on-write; c4u/paged_kv.h)", py::arg("layout"), py::arg("pool_k"),
      py::arg("pool_v"), py::arg("src_blocks"), py::arg("dst_blocks"), py::arg("n_slots"), py::arg("n"),
      py::arg("stream"));
  m.def(
      ("paged_kv_gather" + s).c_str(),
      [gather](const PagedKVLayoutTuple& layout, uintptr_t pool_k, uintptr_t pool_v, uintptr_t block_tables,
               int64_t batch, int64_t max_blocks, uintptr_t seq_lens, uintptr_t out_k, uintptr_t out_v,
               int64_t out_len, uintptr_t stream) {
        PagedKVGatherArgs a;
        a.layout = paged_kv_layout(layout);
        a.pool_k = as_ptr<const void>(pool_k);
        a.pool_v = as_ptr<const void>(pool_v);
        a.block_tables = as_ptr<const int32_t>(block_tables);
        a.seq_lens = as_ptr<const int32_t>(seq_lens);
        a.out_k = as_ptr<void>(out_k);
        a.out_v = as_ptr<void>(out_v);
        a.batch = batch;
        a.max_blocks = max_blocks;
        a.out_len = out_len;
        py::gil_scoped_release release;
        gather(a, stream);
      },
      "Gather sequences' blocks into contiguous zero-padded buffers (c4u/paged_kv.h)", py::arg("layout"),
      py::arg("pool_k"), py::arg("pool_v"), py::arg("block_tables"), py::arg("batch"), py::arg("max_blocks"),
      py::arg("seq_lens"), py::arg("out_k"), py::arg("out_v"), py::arg("out_len"), py::arg("stream"));
}

}  // namespace c4u
