// Batched Qwen2-VL image preprocessing: Pillow-exact BICUBIC resize, rescale + normalize, temporal duplication and
// patchify, for many images in one call.
//
// Reproduces, per image, transformers' Qwen2VLImageProcessorPil._preprocess
// (transformers/models/qwen2_vl/image_processing_pil_qwen2_vl.py) and, for the resize, Pillow's
// libImaging/Resample.c (ImagingResampleInner with the BICUBIC filter on 8-bit images). Python face and the
// numpy/Pillow reference: c4u_engine/ops/preprocess.py, c4u_engine/ops/preprocess_reference.py.
//
// Output layout, per image of resized size (h, w), with P = patch_size, T = temporal_patch_size, M = merge_size,
// gh = h / P, gw = w / P: gh * gw rows of 3 * T * P * P floats, row index ((bh * gw/M + bw) * M + mh) * M + mw for
// patch (gy, gx) = (bh * M + mh, bw * M + mw), column index ((c * T + t) * P + py) * P + px. Images are concatenated
// along the rows in batch order.
#pragma once
#include <cstdint>
#include <vector>

namespace c4u {

// Pillow's fixed-point precision for 8-bit resampling: 32 bits minus 8 for the value minus 2 for overflow.
constexpr int kResamplePrecisionBits = 32 - 8 - 2;

struct PreprocessConfig {
  int patch_size = 14;
  int temporal_patch_size = 2;
  int merge_size = 2;
  double rescale_factor = 1.0 / 255.0;
  double mean[3] = {0.0, 0.0, 0.0};  // cast to float32 like transformers' normalize
  double std[3] = {1.0, 1.0, 1.0};
  // Pass order when both passes run. Pillow >= 13 runs the vertical pass first when the height shrinks more than
  // twice as much as the width (in pixels); older Pillow always ran the horizontal pass first (false here).
  bool pillow_vertical_first = true;
};

// Everything the kernels need for one image; plain int64 fields so the array can be copied to a device as is.
// Two-pass images go source -> intermediate ("mid") -> output; one-pass images read the source in the last pass.
struct ImagePlan {
  int64_t src;                 // address of the source pixels [H, W, 3] uint8 (host or device), set at launch
  int64_t src_h, src_w;        // source size
  int64_t dst_h, dst_w;        // resized size (multiples of patch_size * merge_size)
  int64_t need_h, need_v;      // 1 when the horizontal / vertical pass runs (Pillow skips a pass of equal size)
  int64_t vertical_first;      // 1 when both passes run and the vertical one goes first
  int64_t mid_rows, mid_cols;  // intermediate image [mid_rows, mid_cols, 3] (0 x 0 for one-pass images)
  int64_t row_first;           // horizontal-first: first source row the horizontal pass reads (else 0)
  int64_t ksize_h, ksize_v;    // taps per output column / row
  int64_t coef_h, coef_v;      // offsets into BatchPlan::table: [out, 2] bounds (first tap, count), then [out, ksize]
  int64_t mid_offset;          // byte offset of the intermediate image in the intermediate buffer
  int64_t out_row;             // first output row (patch) of this image
};

struct BatchPlan {
  std::vector<ImagePlan> images;
  std::vector<int32_t> table;  // bounds and fixed-point coefficients of every image, both passes
  std::vector<float> lut;      // [3, 256]: uint8 value -> normalized float32, per channel
  int64_t mid_bytes = 0;       // size of the intermediate uint8 buffer (all images)
  int64_t out_rows = 0;        // total patches
  int64_t out_cols = 0;        // 3 * T * P * P
};

// Builds the per-image tables (host only). Throws std::invalid_argument on sizes the kernels cannot take.
//   src_hw [host, int64]: [n, 2] source (height, width)
//   dst_hw [host, int64]: [n, 2] resized (height, width), each a multiple of patch_size * merge_size
BatchPlan plan_preprocess(int64_t n, const int64_t* src_hw, const int64_t* dst_hw, const PreprocessConfig& cfg);

// CPU kernel (OpenMP over rows).
//   src     [host, uint8]: n pointers, image i of shape [src_hw[i, 0], src_hw[i, 1], 3], C-contiguous RGB
//   src_hw  [host, int64]: [n, 2];  dst_hw [host, int64]: [n, 2]
//   out     [host, float32]: [out_rows, 3 * T * P * P], out_rows = sum of (dst_h / P) * (dst_w / P)
void preprocess_cpu(int64_t n, const uint8_t* const* src, const int64_t* src_hw, const int64_t* dst_hw,
                    const PreprocessConfig& cfg, float* out, int64_t out_rows);

// Bytes of device workspace preprocess_cuda needs for these sizes (tables + intermediate images).
int64_t preprocess_cuda_workspace_bytes(int64_t n, const int64_t* src_hw, const int64_t* dst_hw,
                                        const PreprocessConfig& cfg);

// CUDA twin of preprocess_cpu (only in CUDA builds): uploads the plan into `workspace`, then runs one launch of the
// first pass of two-pass images and one launch of the last pass + normalize + patchify, each over the whole batch,
// on `stream`.
// Asynchronous; the caller keeps src, out and workspace alive until the stream reaches this point.
//   src        [host array of device pointers, uint8]: n images [H, W, 3], C-contiguous RGB
//   src_hw     [host, int64]: [n, 2];  dst_hw [host, int64]: [n, 2]
//   out        [device, float32]: [out_rows, 3 * T * P * P]
//   workspace  [device, uint8]: [workspace_bytes] >= preprocess_cuda_workspace_bytes(...), 256-byte aligned
//   stream     cudaStream_t as an opaque pointer (nullptr: the legacy default stream)
void preprocess_cuda(int64_t n, const uint8_t* const* src, const int64_t* src_hw, const int64_t* dst_hw,
                     const PreprocessConfig& cfg, float* out, int64_t out_rows, void* workspace,
                     int64_t workspace_bytes, void* stream);

}  // namespace c4u
