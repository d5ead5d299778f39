// c4u_engine._C_emulated: the CUDA kernels' own source compiled by the host compiler under the SIMT emulator
// (c4u/simt_emulation.h), for tests and the ops' device="emulated" path. Same raw-pointer conventions as _C
// (bindings.cpp); host memory stands in for device memory. Never used for serving: it is slow on purpose.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "c4u/embed_mrope_pybind.h"
#include "c4u/paged_kv_pybind.h"
#include "c4u/sampling_pybind.h"
#include "c4u/simt_schedule.h"
#include "emulated/sampling_emulated.h"
#include "emulated/embed_mrope_emulated.h"
#include "emulated/paged_kv_emulated.h"
#include "emulated/simt_selftest.h"

namespace py = pybind11;

namespace {

template <class T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

}  // namespace

PYBIND11_MODULE(_C_emulated, m) {
  m.doc() = "CUDA kernel sources run on the CPU under the SIMT emulator (tests only)";
  m.def(
      "set_schedule",
      [](const std::string& order, uint64_t seed) {
        c4u::simt::Schedule s;
        if (order == "forward") {
          s.order = c4u::simt::Order::kForward;
        } else if (order == "reverse") {
          s.order = c4u::simt::Order::kReverse;
        } else if (order == "shuffled") {
          s.order = c4u::simt::Order::kShuffled;
        } else {
          throw py::value_error("set_schedule: order must be forward, reverse or shuffled, got " + order);
        }
        s.seed = seed;
        c4u::simt::set_schedule(s);
      },
      "Order in which the threads of a block (and the blocks) run between barriers", py::arg("order"),
      py::arg("seed") = 0);
  m.def("last_launch_stats", []() {
    const auto s = c4u::simt::last_launch_stats();
    py::dict d;
    d["blocks"] = s.blocks;
    d["threads"] = s.threads;
    d["barriers"] = s.barriers;
    d["warp_syncs"] = s.warp_syncs;
    return d;
  });
  m.attr("have_half") = c4u::emulated::have_half();

  // The emulator's own tests (c4u/simt_selftest.cuh).
  m.def("block_sum", [](uintptr_t in, int64_t blocks, int64_t n_per_block, unsigned threads, uintptr_t out) {
    c4u::emulated::block_sum(ptr<const float>(in), blocks, n_per_block, threads, ptr<float>(out));
  });
  m.def("warp_scan", [](uintptr_t in, int64_t n, unsigned threads, uintptr_t out, uintptr_t odd, uintptr_t flags,
                        uintptr_t total) {
    c4u::emulated::warp_scan(ptr<const int32_t>(in), n, threads, ptr<int32_t>(out), ptr<int32_t>(odd),
                             ptr<int32_t>(flags), ptr<unsigned long long>(total));
  });
  m.def("warp_max_xor", [](uintptr_t in, int64_t n, unsigned threads, uintptr_t out) {
    c4u::emulated::warp_max_xor(ptr<const float>(in), n, threads, ptr<float>(out));
  });
  m.def("rotate_shared", [](uintptr_t in, int64_t n, unsigned threads, bool with_barrier, uintptr_t out) {
    c4u::emulated::rotate_shared(ptr<const float>(in), n, threads, with_barrier, ptr<float>(out));
  });
  m.def("two_sums", [](uintptr_t in, int64_t blocks, unsigned threads, bool reuse_barrier, uintptr_t out) {
    c4u::emulated::two_sums(ptr<const float>(in), blocks, threads, reuse_barrier, ptr<float>(out));
  });
  m.def("divergent_barrier", [](unsigned threads, unsigned active, uintptr_t out) {
    c4u::emulated::divergent_barrier(threads, active, ptr<float>(out));
  });
  m.def("half_dot", [](uintptr_t in_h, uintptr_t in_b, int64_t blocks, unsigned threads, uintptr_t out) {
    c4u::emulated::half_dot(ptr<const uint16_t>(in_h), ptr<const uint16_t>(in_b), blocks, threads, ptr<float>(out));
  });

  c4u::bind_embed_mrope(
      m, "", [](const c4u::EmbedMergeArgs& a, uintptr_t) { c4u::emulated::embed_merge(a); },
      [](const c4u::MropeArgs& a, uintptr_t) { c4u::emulated::mrope_positions(a); });
  c4u::bind_sample(m, "", [](const c4u::SamplingArgs& a, uintptr_t) { c4u::emulated::sample(a); });
  // Same signatures as _C.paged_kv_*_cpu (host memory; stream must be 0).
  c4u::bind_paged_kv(
      m, "", [](const c4u::PagedKVAppendArgs& a, uintptr_t) { c4u::emulated::paged_kv_append(a); },
      [](const c4u::PagedKVCopyArgs& a, uintptr_t) { c4u::emulated::paged_kv_copy_blocks(a); },
      [](const c4u::PagedKVGatherArgs& a, uintptr_t) { c4u::emulated::paged_kv_gather(a); });
}
