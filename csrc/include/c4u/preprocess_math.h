// Per-pixel pieces of batched preprocessing shared by the CPU kernel (preprocess.cpp) and its CUDA twin
// (preprocess.cu), so both compute the same bits. See c4u/preprocess.h for the layouts.
#pragma once
#include <cstdint>

#include "c4u/preprocess.h"

#ifdef __CUDACC__
#define C4U_HD __host__ __device__
#else
#define C4U_HD
#endif

namespace c4u {

// Pillow's clip8: drop the fixed-point fraction, clamp to [0, 255].
C4U_HD inline uint8_t clip8(int32_t v) {
  const int32_t s = v >> kResamplePrecisionBits;
  return static_cast<uint8_t>(s < 0 ? 0 : (s > 255 ? 255 : s));
}

// Horizontal tap sum of Pillow's ImagingResampleHorizontal_8bpc for output column x, channel c of one RGB row.
//   in [uint8]: [src_w, 3] one input row
C4U_HD inline uint8_t resample_h_value(const ImagePlan& p, const int32_t* table, const uint8_t* in, int64_t x, int c) {
  const int32_t* bounds = table + p.coef_h;
  const int32_t* k = table + p.coef_h + 2 * p.dst_w + x * p.ksize_h;
  const int64_t xmin = bounds[2 * x], count = bounds[2 * x + 1];
  int32_t s = 1 << (kResamplePrecisionBits - 1);
  const uint8_t* px = in + xmin * 3 + c;
  for (int64_t t = 0; t < count; ++t, px += 3) s += *px * k[t];
  return clip8(s);
}

// The same for the three channels at once (shares the coefficient loads).
C4U_HD inline void resample_h_pixel(const ImagePlan& p, const int32_t* table, const uint8_t* in, int64_t x,
                                    uint8_t* out3) {
  const int32_t* bounds = table + p.coef_h;
  const int32_t* k = table + p.coef_h + 2 * p.dst_w + x * p.ksize_h;
  const int64_t xmin = bounds[2 * x], count = bounds[2 * x + 1];
  int32_t s0 = 1 << (kResamplePrecisionBits - 1), s1 = s0, s2 = s0;
  const uint8_t* px = in + xmin * 3;
  for (int64_t t = 0; t < count; ++t, px += 3) {
    s0 += px[0] * k[t];
    s1 += px[1] * k[t];
    s2 += px[2] * k[t];
  }
  out3[0] = clip8(s0);
  out3[1] = clip8(s1);
  out3[2] = clip8(s2);
}

// Vertical tap sum of Pillow's ImagingResampleVertical_8bpc for output row y at byte column j of an
// [rows, stride] uint8 image `in` (bounds are relative to its first row).
C4U_HD inline uint8_t resample_v_value(const ImagePlan& p, const int32_t* table, const uint8_t* in, int64_t stride,
                                       int64_t y, int64_t j) {
  const int32_t* bounds = table + p.coef_v;
  const int32_t* k = table + p.coef_v + 2 * p.dst_h + y * p.ksize_v;
  const int64_t ymin = bounds[2 * y], count = bounds[2 * y + 1];
  int32_t s = 1 << (kResamplePrecisionBits - 1);
  const uint8_t* tap = in + ymin * stride + j;
  for (int64_t t = 0; t < count; ++t, tap += stride) s += *tap * k[t];
  return clip8(s);
}

// Which pass produces the output rows (the other one, if any, ran first into the intermediate image).
C4U_HD inline bool two_pass(const ImagePlan& p) { return p.need_h && p.need_v; }
C4U_HD inline bool last_pass_is_h(const ImagePlan& p) { return p.need_h && (p.vertical_first || !p.need_v); }
C4U_HD inline bool last_pass_is_v(const ImagePlan& p) { return p.need_v && (!p.vertical_first || !p.need_h); }

// Input of the last pass: the intermediate image of a two-pass image, else the source.
C4U_HD inline const uint8_t* last_pass_input(const ImagePlan& p, const uint8_t* mid) {
  return two_pass(p) ? mid + p.mid_offset : reinterpret_cast<const uint8_t*>(p.src);
}

// Offset in `out` of resized pixel (y, x), channel 0, temporal copy 0 (transformers' patchify, see preprocess.h).
// Channel c, copy t lives at + ((c * T + t) * P * P).
C4U_HD inline int64_t patch_offset(const PreprocessConfig& cfg, const ImagePlan& p, int64_t out_cols, int64_t y,
                                   int64_t x) {
  const int64_t P = cfg.patch_size, M = cfg.merge_size;
  const int64_t gy = y / P, gx = x / P, blocks_w = p.dst_w / (P * M);
  const int64_t row = ((gy / M * blocks_w + gx / M) * M + gy % M) * M + gx % M;
  return (p.out_row + row) * out_cols + (y % P) * P + (x % P);
}

// Writes one normalized value to its T temporal copies.
C4U_HD inline void write_patch_value(const PreprocessConfig& cfg, float* out, int64_t offset, int c, float v) {
  const int64_t T = cfg.temporal_patch_size, PP = static_cast<int64_t>(cfg.patch_size) * cfg.patch_size;
  for (int64_t t = 0; t < T; ++t) out[offset + (c * T + t) * PP] = v;
}

// uint8 -> float32 table per channel, with transformers' operation order: rescale in float64 then cast to float32
// (image_transforms.rescale), then (x - mean) / std in float32 (image_transforms.normalize).
inline void fill_normalize_lut(const PreprocessConfig& cfg, float* lut) {
  for (int c = 0; c < 3; ++c) {
    const float mean = static_cast<float>(cfg.mean[c]);
    const float stdev = static_cast<float>(cfg.std[c]);
    for (int v = 0; v < 256; ++v) {
      const float rescaled = static_cast<float>(static_cast<double>(v) * cfg.rescale_factor);
      lut[c * 256 + v] = (rescaled - mean) / stdev;
    }
  }
}

}  // namespace c4u
