// CUDA twin of preprocess_cpu (see c4u/preprocess.h). The plan (Pillow's fixed-point coefficients, the normalize
// table, per-image offsets) is built on the host by the same code as the CPU kernel and uploaded in one copy; then
// one launch runs the first pass of every two-pass image and one launch the last pass + normalize + patchify.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "c4u/preprocess.h"
#include "c4u/preprocess_math.h"

namespace c4u {
namespace {

constexpr int64_t kAlign = 256;
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocksX = 4096;
constexpr int64_t kMaxBlocksY = 65535;

int64_t align_up(int64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// Workspace: [ImagePlan n][int32 table][float lut 3*256][uint8 intermediate images]; all but the last uploaded.
struct WorkspaceLayout {
  int64_t table, lut, mid, total;
};

WorkspaceLayout layout_of(const BatchPlan& plan) {
  WorkspaceLayout l{};
  l.table = align_up(static_cast<int64_t>(plan.images.size() * sizeof(ImagePlan)));
  l.lut = align_up(l.table + static_cast<int64_t>(plan.table.size() * sizeof(int32_t)));
  l.mid = align_up(l.lut + static_cast<int64_t>(plan.lut.size() * sizeof(float)));
  l.total = align_up(l.mid + plan.mid_bytes);
  return l;
}

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("c4u preprocess_cuda: ") + what + ": " + cudaGetErrorString(err));
  }
}

// First pass of two-pass images: one thread per intermediate pixel; blockIdx.y walks the images.
__global__ void first_pass(const ImagePlan* plans, int64_t n, const int32_t* table, uint8_t* mid) {
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const ImagePlan& p = plans[i];
    const int64_t total = p.mid_rows * p.mid_cols;  // 0 for one-pass images
    const auto* src = reinterpret_cast<const uint8_t*>(p.src);
    for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const int64_t y = idx / p.mid_cols, x = idx % p.mid_cols;
      uint8_t* out3 = mid + p.mid_offset + idx * 3;
      if (p.vertical_first) {
        for (int c = 0; c < 3; ++c) out3[c] = resample_v_value(p, table, src, p.src_w * 3, y, x * 3 + c);
      } else {
        resample_h_pixel(p, table, src + (p.row_first + y) * p.src_w * 3, x, out3);
      }
    }
  }
}

// Last pass + normalize + patchify: one thread per (patch row, channel, py, px) of the output, so consecutive
// threads write consecutive floats.
__global__ void last_pass(const ImagePlan* plans, int64_t n, const int32_t* table, const float* lut,
                          const uint8_t* mid, PreprocessConfig cfg, int64_t out_cols, float* out) {
  const int64_t P = cfg.patch_size, M = cfg.merge_size, PP = P * P;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const ImagePlan& p = plans[i];
    const int64_t blocks_w = p.dst_w / (P * M);
    const int64_t total = (p.dst_h / P) * (p.dst_w / P) * 3 * PP;
    const uint8_t* in = last_pass_input(p, mid);
    const bool h_last = last_pass_is_h(p), v_last = last_pass_is_v(p);
    for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const int64_t row = idx / (3 * PP), rem = idx % (3 * PP);
      const int c = static_cast<int>(rem / PP);
      const int64_t py = (rem / P) % P, px = rem % P;
      const int64_t block = row / (M * M);
      const int64_t y = ((block / blocks_w) * M + (row / M) % M) * P + py;
      const int64_t x = ((block % blocks_w) * M + row % M) * P + px;
      uint8_t v;
      if (h_last) {
        v = resample_h_value(p, table, in + y * p.src_w * 3, x, c);
      } else if (v_last) {
        v = resample_v_value(p, table, in, p.dst_w * 3, y, x * 3 + c);
      } else {
        v = in[(y * p.dst_w + x) * 3 + c];
      }
      write_patch_value(cfg, out, (p.out_row + row) * out_cols + py * P + px, c, lut[c * 256 + v]);
    }
  }
}

}  // namespace

int64_t preprocess_cuda_workspace_bytes(int64_t n, const int64_t* src_hw, const int64_t* dst_hw,
                                        const PreprocessConfig& cfg) {
  return layout_of(plan_preprocess(n, src_hw, dst_hw, cfg)).total;
}

void preprocess_cuda(int64_t n, const uint8_t* const* src, const int64_t* src_hw, const int64_t* dst_hw,
                     const PreprocessConfig& cfg, float* out, int64_t out_rows, void* workspace,
                     int64_t workspace_bytes, void* stream) {
  BatchPlan plan = plan_preprocess(n, src_hw, dst_hw, cfg);
  if (plan.out_rows != out_rows) {
    throw std::invalid_argument("c4u preprocess_cuda: output has " + std::to_string(out_rows) +
                                " rows, the sizes give " + std::to_string(plan.out_rows));
  }
  const WorkspaceLayout l = layout_of(plan);
  if (workspace_bytes < l.total || reinterpret_cast<uintptr_t>(workspace) % kAlign != 0) {
    throw std::invalid_argument("c4u preprocess_cuda: workspace must be " + std::to_string(l.total) +
                                " bytes, 256-byte aligned; got " + std::to_string(workspace_bytes));
  }
  if (n == 0) return;
  int64_t widest = 0;  // most threads any one image needs in either pass
  for (int64_t i = 0; i < n; ++i) {
    ImagePlan& p = plan.images[i];
    p.src = reinterpret_cast<int64_t>(src[i]);
    widest = std::max(widest, std::max(p.mid_rows * p.mid_cols, p.dst_h * p.dst_w * 3));
  }
  // Pageable host memory: cudaMemcpyAsync returns once it is staged, so `staging` may die after the call.
  std::vector<uint8_t> staging(static_cast<size_t>(l.mid), 0);
  std::memcpy(staging.data(), plan.images.data(), plan.images.size() * sizeof(ImagePlan));
  std::memcpy(staging.data() + l.table, plan.table.data(), plan.table.size() * sizeof(int32_t));
  std::memcpy(staging.data() + l.lut, plan.lut.data(), plan.lut.size() * sizeof(float));
  auto* base = static_cast<uint8_t*>(workspace);
  auto s = static_cast<cudaStream_t>(stream);
  check_cuda(cudaMemcpyAsync(base, staging.data(), staging.size(), cudaMemcpyHostToDevice, s), "plan upload");

  const auto* plans = reinterpret_cast<const ImagePlan*>(base);
  const auto* table = reinterpret_cast<const int32_t*>(base + l.table);
  const auto* lut = reinterpret_cast<const float*>(base + l.lut);
  uint8_t* mid = base + l.mid;
  const dim3 grid(static_cast<unsigned>(std::min(kMaxBlocksX, (widest + kThreads - 1) / kThreads)),
                  static_cast<unsigned>(std::min(kMaxBlocksY, n)));
  if (plan.mid_bytes > 0) {
    first_pass<<<grid, kThreads, 0, s>>>(plans, n, table, mid);
    check_cuda(cudaGetLastError(), "first pass launch");
  }
  last_pass<<<grid, kThreads, 0, s>>>(plans, n, table, lut, mid, cfg, plan.out_cols, out);
  check_cuda(cudaGetLastError(), "last pass launch");
}

}  // namespace c4u
