// The emulator's own test kernels (c4u/simt_selftest.cuh), launched under emulation for the emulated module.
#include "c4u/simt_emulation.h"
// The kernel header follows the emulation header: it is CUDA source.
#include "c4u/simt_selftest.cuh"
#include "emulated/simt_selftest.h"

namespace c4u {
namespace emulated {

void block_sum(const float* in, int64_t blocks, int64_t n_per_block, unsigned threads, float* out) {
  simt::launch(selftest::block_sum, dim3(static_cast<unsigned>(blocks)), dim3(threads), threads * sizeof(float), in,
               n_per_block, out);
}

void warp_scan(const int32_t* in, int64_t n, unsigned threads, int32_t* out, int32_t* odd_count, int32_t* flags,
               unsigned long long* total) {
  simt::launch(selftest::warp_scan, dim3(static_cast<unsigned>(n / threads)), dim3(threads), 0, in, out, odd_count,
               flags, total);
}

void warp_max_xor(const float* in, int64_t n, unsigned threads, float* out) {
  simt::launch(selftest::warp_max_xor, dim3(static_cast<unsigned>(n / threads)), dim3(threads), 0, in, out);
}

void rotate_shared(const float* in, int64_t n, unsigned threads, bool with_barrier, float* out) {
  simt::launch(selftest::rotate_shared, dim3(static_cast<unsigned>(n / threads)), dim3(threads), 0, in, out,
               with_barrier ? 1 : 0);
}

void two_sums(const float* in, int64_t blocks, unsigned threads, bool reuse_barrier, float* out) {
  simt::launch(selftest::two_sums, dim3(static_cast<unsigned>(blocks)), dim3(threads), 0, in, out,
               reuse_barrier ? 1 : 0);
}

void divergent_barrier(unsigned threads, unsigned active, float* out) {
  simt::launch(selftest::divergent_barrier, dim3(1), dim3(threads), 0, out, active);
}

bool have_half() {
#if defined(C4U_SIMT_CUDA_HEADERS)
  return true;
#else
  return false;
#endif
}

void half_dot(const uint16_t* in_h, const uint16_t* in_b, int64_t blocks, unsigned threads, float* out) {
#if defined(C4U_SIMT_CUDA_HEADERS)
  simt::launch(selftest::half_dot, dim3(static_cast<unsigned>(blocks)), dim3(threads), 0,
               reinterpret_cast<const __half*>(in_h), reinterpret_cast<const __nv_bfloat16*>(in_b), out);
#else
  (void)in_h, (void)in_b, (void)blocks, (void)threads, (void)out;
  throw std::runtime_error("simt: built without CUDA's cuda_fp16.h / cuda_bf16.h headers");
#endif
}

}  // namespace emulated
}  // namespace c4u
