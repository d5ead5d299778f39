// Planning (shared with the CUDA twin) and the CPU kernel of batched Qwen2-VL preprocessing. See c4u/preprocess.h.
#include "c4u/preprocess.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "c4u/preprocess_math.h"

// Hot loops get an AVX2 clone picked at load time (plain builds stay portable); integer math, same results.
#if defined(__GNUC__) && defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__)
#define C4U_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define C4U_VECTOR_CLONES
#endif

namespace c4u {
namespace {

constexpr int64_t kParallelPixels = int64_t{1} << 20;  // output pixels from which preprocessing uses threads

// Pillow's bicubic_filter (Resample.c), a = -0.5.
double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for box (0, in_size): appends [out, 2] bounds then
// [out, ksize] fixed-point coefficients to `table`, returns ksize. Same double operations in the same order, so the
// same bits (the build turns off FMA contraction).
int64_t append_bicubic_coeffs(int64_t in_size, int64_t out_size, std::vector<int32_t>& table) {
  const double scale = static_cast<double>(static_cast<float>(in_size)) / static_cast<double>(out_size);
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;
  const int64_t ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  const size_t bounds_at = table.size();
  const size_t coeffs_at = bounds_at + 2 * out_size;
  table.resize(coeffs_at + out_size * ksize, 0);
  std::vector<double> k(ksize);
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = 0.0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int64_t xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      const double w = bicubic_filter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int64_t x = 0; x < xmax; ++x) {
      if (ww != 0.0) k[x] /= ww;
    }
    int32_t* kk = &table[coeffs_at + xx * ksize];
    for (int64_t x = 0; x < xmax; ++x) {
      const double v = k[x] * (1 << kResamplePrecisionBits);
      kk[x] = static_cast<int32_t>(k[x] < 0 ? -0.5 + v : 0.5 + v);
    }
    table[bounds_at + 2 * xx] = static_cast<int32_t>(xmin);
    table[bounds_at + 2 * xx + 1] = static_cast<int32_t>(xmax);
  }
  return ksize;
}

// Output row y of the vertical pass over an [rows, stride] image, accumulated row by row (the same integer sums
// as Pillow's column-by-column loop, in cache order).
C4U_VECTOR_CLONES void resample_v_row(const ImagePlan& p, const int32_t* table, const uint8_t* in, int64_t stride,
                                      int64_t y, std::vector<int32_t>& acc, uint8_t* out) {
  const int32_t* bounds = table + p.coef_v;
  const int32_t* k = table + p.coef_v + 2 * p.dst_h + y * p.ksize_v;
  const int64_t ymin = bounds[2 * y], count = bounds[2 * y + 1];
  acc.assign(stride, 1 << (kResamplePrecisionBits - 1));
  int32_t* __restrict sums = acc.data();  // uint8 pointers may alias anything: promise they don't, to vectorize
  for (int64_t t = 0; t < count; ++t) {
    const uint8_t* __restrict tap = in + (ymin + t) * stride;
    const int32_t w = k[t];
    for (int64_t j = 0; j < stride; ++j) sums[j] += tap[j] * w;
  }
  for (int64_t j = 0; j < stride; ++j) out[j] = clip8(sums[j]);
}

void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("c4u preprocess: " + what);
}

}  // namespace

BatchPlan plan_preprocess(int64_t n, const int64_t* src_hw, const int64_t* dst_hw, const PreprocessConfig& cfg) {
  const int64_t P = cfg.patch_size, T = cfg.temporal_patch_size, M = cfg.merge_size;
  check(n >= 0, "negative image count");
  check(P > 0 && T > 0 && M > 0, "patch_size, temporal_patch_size and merge_size must be positive");
  BatchPlan plan;
  plan.out_cols = 3 * T * P * P;
  plan.images.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    ImagePlan& p = plan.images[i];
    p = ImagePlan{};
    p.src_h = src_hw[2 * i];
    p.src_w = src_hw[2 * i + 1];
    p.dst_h = dst_hw[2 * i];
    p.dst_w = dst_hw[2 * i + 1];
    const std::string at = "image " + std::to_string(i) + ": ";
    check(p.src_h > 0 && p.src_w > 0, at + "empty source image");
    check(p.dst_h > 0 && p.dst_w > 0 && p.dst_h % (P * M) == 0 && p.dst_w % (P * M) == 0,
          at + "resized size must be a positive multiple of patch_size * merge_size");
    // Pillow keeps 8-bit sums in an int with 2 spare bits; sizes beyond 2^24 also lose exactness in its float box.
    check(p.src_h < (1 << 24) && p.src_w < (1 << 24) && p.dst_h < (1 << 24) && p.dst_w < (1 << 24),
          at + "sizes must be below 2^24");
    p.need_h = p.dst_w != p.src_w;
    p.need_v = p.dst_h != p.src_h;
    p.vertical_first = p.need_h && p.need_v && cfg.pillow_vertical_first && p.src_h > p.dst_h &&
                       (p.src_h - p.dst_h) > (p.src_w - p.dst_w) * 2;
    p.coef_v = static_cast<int64_t>(plan.table.size());
    p.ksize_v = append_bicubic_coeffs(p.src_h, p.dst_h, plan.table);
    p.coef_h = static_cast<int64_t>(plan.table.size());
    p.ksize_h = append_bicubic_coeffs(p.src_w, p.dst_w, plan.table);
    if (p.need_h && p.need_v) {
      if (p.vertical_first) {  // source -> [dst_h, src_w] -> output
        p.mid_rows = p.dst_h;
        p.mid_cols = p.src_w;
      } else {  // source rows [first, last) -> [last - first, dst_w] -> output; vertical bounds become relative
        int32_t* bounds_v = &plan.table[p.coef_v];
        const int64_t first = bounds_v[0];
        const int64_t last = bounds_v[2 * p.dst_h - 2] + bounds_v[2 * p.dst_h - 1];
        for (int64_t y = 0; y < p.dst_h; ++y) bounds_v[2 * y] -= static_cast<int32_t>(first);
        p.row_first = first;
        p.mid_rows = last - first;
        p.mid_cols = p.dst_w;
      }
      p.mid_offset = plan.mid_bytes;
      plan.mid_bytes += p.mid_rows * p.mid_cols * 3;
    }
    p.out_row = plan.out_rows;
    plan.out_rows += (p.dst_h / P) * (p.dst_w / P);
  }
  plan.lut.resize(3 * 256);
  fill_normalize_lut(cfg, plan.lut.data());
  return plan;
}

void preprocess_cpu(int64_t n, const uint8_t* const* src, const int64_t* src_hw, const int64_t* dst_hw,
                    const PreprocessConfig& cfg, float* out, int64_t out_rows) {
  BatchPlan plan = plan_preprocess(n, src_hw, dst_hw, cfg);
  check(plan.out_rows == out_rows, "output has " + std::to_string(out_rows) + " rows, the sizes give " +
                                       std::to_string(plan.out_rows));
  for (int64_t i = 0; i < n; ++i) plan.images[i].src = reinterpret_cast<int64_t>(src[i]);
  std::vector<uint8_t> mid(static_cast<size_t>(plan.mid_bytes));

  // Row work items of both passes over the whole batch, so small images still keep every thread busy.
  std::vector<int64_t> first_start(n + 1, 0), last_start(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    const ImagePlan& p = plan.images[i];
    first_start[i + 1] = first_start[i] + p.mid_rows;
    last_start[i + 1] = last_start[i] + p.dst_h;
  }
  const auto image_of = [](const std::vector<int64_t>& start, int64_t r) {
    return static_cast<int64_t>(std::upper_bound(start.begin(), start.end(), r) - start.begin()) - 1;
  };
  const int32_t* table = plan.table.data();
  const float* lut = plan.lut.data();
  const int64_t T = cfg.temporal_patch_size, PP = static_cast<int64_t>(cfg.patch_size) * cfg.patch_size;
  std::vector<int64_t> column_start(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) column_start[i + 1] = column_start[i] + plan.images[i].dst_w;
  std::vector<int64_t> column_offsets(column_start[n]);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t x = 0; x < plan.images[i].dst_w; ++x) {
      column_offsets[column_start[i] + x] = patch_offset(cfg, plan.images[i], plan.out_cols, 0, x);
    }
  }

  // Threads pay off only on big jobs: a few ad-sized images take well under a millisecond on one core, while an
  // OpenMP team's spinning threads slow down whatever else this process runs (the engine's model calls).
  int64_t out_pixels = 0;
  for (int64_t i = 0; i < n; ++i) out_pixels += plan.images[i].dst_w * plan.images[i].dst_h;
  const bool threaded = out_pixels >= kParallelPixels;
#pragma omp parallel if (threaded)
  {
    std::vector<int32_t> acc;
    std::vector<uint8_t> row;
    // First pass of two-pass images, into the intermediate image.
#pragma omp for schedule(static)
    for (int64_t r = 0; r < first_start[n]; ++r) {
      const int64_t i = image_of(first_start, r);
      const ImagePlan& p = plan.images[i];
      const int64_t y = r - first_start[i];
      const auto* src_px = reinterpret_cast<const uint8_t*>(p.src);
      uint8_t* out_row = mid.data() + p.mid_offset + y * p.mid_cols * 3;
      if (p.vertical_first) {
        resample_v_row(p, table, src_px, p.src_w * 3, y, acc, out_row);
      } else {
        const uint8_t* in = src_px + (p.row_first + y) * p.src_w * 3;
        for (int64_t x = 0; x < p.dst_w; ++x) resample_h_pixel(p, table, in, x, out_row + 3 * x);
      }
    }
    // Last pass (or a copy), then normalize + patchify each output row.
#pragma omp for schedule(static)
    for (int64_t r = 0; r < last_start[n]; ++r) {
      const int64_t i = image_of(last_start, r);
      const ImagePlan& p = plan.images[i];
      const int64_t y = r - last_start[i];
      const uint8_t* in = last_pass_input(p, mid.data());
      const uint8_t* pixels = in + y * p.dst_w * 3;  // no last pass: the row itself
      row.resize(p.dst_w * 3);
      if (last_pass_is_h(p)) {
        const uint8_t* in_row = in + y * p.src_w * 3;
        for (int64_t x = 0; x < p.dst_w; ++x) resample_h_pixel(p, table, in_row, x, row.data() + 3 * x);
        pixels = row.data();
      } else if (last_pass_is_v(p)) {
        resample_v_row(p, table, in, p.dst_w * 3, y, acc, row.data());
        pixels = row.data();
      }
      // patch_offset(y, x) splits into a part of y and a part of x; the x part is tabulated once per image.
      const int64_t row_part = patch_offset(cfg, p, plan.out_cols, y, 0) - patch_offset(cfg, p, plan.out_cols, 0, 0);
      const int64_t* x_part = column_offsets.data() + column_start[i];
      for (int64_t x = 0; x < p.dst_w; ++x) {
        float* at = out + row_part + x_part[x];
        for (int c = 0; c < 3; ++c) {
          const float v = lut[c * 256 + pixels[3 * x + c]];
          for (int64_t t = 0; t < T; ++t) at[(c * T + t) * PP] = v;
        }
      }
    }
  }
}

}  // namespace c4u
