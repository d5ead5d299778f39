// The one pybind11 module, c4u_engine._C. Bindings take raw pointers (as ints), shapes and a stream
// handle; argument checking happens in c4u_engine/ops/*.py before any call lands here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <vector>

#include "c4u/build_info.h"
#include "c4u/cascade_attention_pybind.h"
#include "c4u/embed_mrope_pybind.h"
#include "c4u/paged_kv.h"
#include "c4u/paged_kv_pybind.h"
#include "c4u/sampling.h"
#include "c4u/sampling_math.h"
#include "c4u/sampling_pybind.h"
#include "c4u/preprocess.h"

namespace py = pybind11;

namespace {

c4u::PreprocessConfig preprocess_config(int patch_size, int temporal_patch_size, int merge_size, double rescale_factor,
                                        const std::array<double, 3>& mean, const std::array<double, 3>& std,
                                        bool pillow_vertical_first) {
  c4u::PreprocessConfig cfg;
  cfg.pillow_vertical_first = pillow_vertical_first;
  cfg.patch_size = patch_size;
  cfg.temporal_patch_size = temporal_patch_size;
  cfg.merge_size = merge_size;
  cfg.rescale_factor = rescale_factor;
  for (int c = 0; c < 3; ++c) {
    cfg.mean[c] = mean[c];
    cfg.std[c] = std[c];
  }
  return cfg;
}

// Sizes arrive as flat [n * 2] lists: (height, width) per image.
int64_t image_count(const std::vector<uintptr_t>& src, const std::vector<int64_t>& src_hw,
                    const std::vector<int64_t>& dst_hw) {
  if (src_hw.size() != 2 * src.size() || dst_hw.size() != 2 * src.size()) {
    throw py::value_error("preprocess: src_hw and dst_hw must hold 2 ints per source pointer");
  }
  return static_cast<int64_t>(src.size());
}

#define C4U_PREPROCESS_CONFIG_ARGS                                                                 \
  py::arg("patch_size"), py::arg("temporal_patch_size"), py::arg("merge_size"), py::arg("rescale_factor"), \
      py::arg("mean"), py::arg("std"), py::arg("pillow_vertical_first")

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "c4u_engine native core: CPU kernels, and CUDA kernels when built with CUDA";
#ifdef C4U_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("cuda_archs") = std::string(C4U_CUDA_ARCHS);
  m.def("cuda_device_count", &c4u::cuda_device_count, "CUDA devices visible (0 without CUDA build or driver)");
  m.def("cuda_device_name", &c4u::cuda_device_name, py::arg("index"));

  m.def(
      "preprocess_cpu",
      [](const std::vector<uintptr_t>& src, const std::vector<int64_t>& src_hw, const std::vector<int64_t>& dst_hw,
         uintptr_t out, int64_t out_rows, int patch_size, int temporal_patch_size, int merge_size,
         double rescale_factor, std::array<double, 3> mean, std::array<double, 3> std, bool pillow_vertical_first) {
        const int64_t n = image_count(src, src_hw, dst_hw);
        const auto cfg = preprocess_config(patch_size, temporal_patch_size, merge_size, rescale_factor, mean, std,
                                           pillow_vertical_first);
        py::gil_scoped_release release;
        c4u::preprocess_cpu(n, reinterpret_cast<const uint8_t* const*>(src.data()), src_hw.data(), dst_hw.data(),
                            cfg, reinterpret_cast<float*>(out), out_rows);
      },
      "Batched Qwen2-VL preprocessing on host buffers (see csrc/include/c4u/preprocess.h)", py::arg("src"),
      py::arg("src_hw"), py::arg("dst_hw"), py::arg("out"), py::arg("out_rows"), C4U_PREPROCESS_CONFIG_ARGS);

  c4u::bind_paged_kv(
      m, "_cpu", [](const c4u::PagedKVAppendArgs& a, uintptr_t) { c4u::paged_kv_append_cpu(a); },
      [](const c4u::PagedKVCopyArgs& a, uintptr_t) { c4u::paged_kv_copy_blocks_cpu(a); },
      [](const c4u::PagedKVGatherArgs& a, uintptr_t) { c4u::paged_kv_gather_cpu(a); });

  m.def(
      "philox4x32_10",
      [](std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key) {
        uint32_t rest[3];
        const uint32_t first =
            c4u::sampling::philox_first(counter[0], counter[1], counter[2], counter[3], key[0], key[1], rest);
        return std::array<uint32_t, 4>{first, rest[0], rest[1], rest[2]};
      },
      "The Philox4x32-10 block the samplers draw from (c4u/sampling_math.h), for tests and reproducing draws",
      py::arg("counter"), py::arg("key"));
  m.def(
      "sampling_exp_log",
      [](const std::vector<float>& x) {
        std::vector<float> e(x.size()), l(x.size());
        for (size_t i = 0; i < x.size(); ++i) {
          e[i] = x[i] <= 0.f ? c4u::sampling::exp_nonpositive(x[i]) : NAN;
          l[i] = x[i] > 0.f ? c4u::sampling::log_positive(x[i]) : NAN;
        }
        return std::make_pair(e, l);
      },
      "(exp(x) for x <= 0, log(x) for x > 0) as the samplers compute them (c4u/sampling_math.h), NaN outside; "
      "for tests",
      py::arg("x"));
  m.def(
      "sampling_gumbel_of_word",
      [](const std::vector<uint32_t>& words) {
        std::vector<float> g(words.size());
        for (size_t i = 0; i < words.size(); ++i) g[i] = c4u::sampling::gumbel_of_word(words[i]);
        return g;
      },
      "The Gumbel noise the samplers derive from one Philox output word (c4u/sampling_math.h); for tests",
      py::arg("words"));
  c4u::bind_embed_mrope(
      m, "_cpu", [](const c4u::EmbedMergeArgs& a, uintptr_t) { c4u::embed_merge_cpu(a); },
      [](const c4u::MropeArgs& a, uintptr_t) { c4u::mrope_positions_cpu(a); });
  c4u::bind_sample(m, "_cpu", [](const c4u::SamplingArgs& a, uintptr_t) { c4u::sample_cpu(a); });
  c4u::bind_cascade_attention(m, "_cpu",
                              [](const c4u::CascadeAttentionArgs& a, uintptr_t) { c4u::cascade_attention_cpu(a); });

#ifdef C4U_WITH_CUDA
  c4u::bind_cascade_attention(m, "_cuda", [](const c4u::CascadeAttentionArgs& a, uintptr_t s) {
    c4u::cascade_attention_cuda(a, reinterpret_cast<void*>(s));
  });
  c4u::bind_embed_mrope(
      m, "_cuda",
      [](const c4u::EmbedMergeArgs& a, uintptr_t s) { c4u::embed_merge_cuda(a, reinterpret_cast<void*>(s)); },
      [](const c4u::MropeArgs& a, uintptr_t s) { c4u::mrope_positions_cuda(a, reinterpret_cast<void*>(s)); });
  c4u::bind_sample(m, "_cuda",
                   [](const c4u::SamplingArgs& a, uintptr_t s) { c4u::sample_cuda(a, reinterpret_cast<void*>(s)); });
  c4u::bind_paged_kv(
      m, "_cuda",
      [](const c4u::PagedKVAppendArgs& a, uintptr_t s) { c4u::paged_kv_append_cuda(a, reinterpret_cast<void*>(s)); },
      [](const c4u::PagedKVCopyArgs& a, uintptr_t s) {
        c4u::paged_kv_copy_blocks_cuda(a, reinterpret_cast<void*>(s));
      },
      [](const c4u::PagedKVGatherArgs& a, uintptr_t s) { c4u::paged_kv_gather_cuda(a, reinterpret_cast<void*>(s)); });
  m.def(
      "preprocess_cuda_workspace_bytes",
      [](const std::vector<int64_t>& src_hw, const std::vector<int64_t>& dst_hw, int patch_size,
         int temporal_patch_size, int merge_size, double rescale_factor, std::array<double, 3> mean,
         std::array<double, 3> std, bool pillow_vertical_first) {
        if (src_hw.size() != dst_hw.size() || src_hw.size() % 2) {
          throw py::value_error("preprocess: src_hw and dst_hw must hold 2 ints per image");
        }
        const auto cfg = preprocess_config(patch_size, temporal_patch_size, merge_size, rescale_factor, mean, std,
                                           pillow_vertical_first);
        return c4u::preprocess_cuda_workspace_bytes(static_cast<int64_t>(src_hw.size() / 2), src_hw.data(),
                                                    dst_hw.data(), cfg);
      },
      "Device workspace bytes preprocess_cuda needs", py::arg("src_hw"), py::arg("dst_hw"),
      C4U_PREPROCESS_CONFIG_ARGS);
  m.def(
      "preprocess_cuda",
      [](const std::vector<uintptr_t>& src, const std::vector<int64_t>& src_hw, const std::vector<int64_t>& dst_hw,
         uintptr_t out, int64_t out_rows, uintptr_t workspace, int64_t workspace_bytes, uintptr_t stream,
         int patch_size, int temporal_patch_size, int merge_size, double rescale_factor, std::array<double, 3> mean,
         std::array<double, 3> std, bool pillow_vertical_first) {
        const int64_t n = image_count(src, src_hw, dst_hw);
        const auto cfg = preprocess_config(patch_size, temporal_patch_size, merge_size, rescale_factor, mean, std,
                                           pillow_vertical_first);
        py::gil_scoped_release release;
        c4u::preprocess_cuda(n, reinterpret_cast<const uint8_t* const*>(src.data()), src_hw.data(), dst_hw.data(),
                             cfg, reinterpret_cast<float*>(out), out_rows, reinterpret_cast<void*>(workspace),
                             workspace_bytes, reinterpret_cast<void*>(stream));
      },
      "Batched Qwen2-VL preprocessing on device buffers, asynchronous on `stream`", py::arg("src"),
      py::arg("src_hw"), py::arg("dst_hw"), py::arg("out"), py::arg("out_rows"), py::arg("workspace"),
      py::arg("workspace_bytes"), py::arg("stream"), C4U_PREPROCESS_CONFIG_ARGS);
#endif
}
