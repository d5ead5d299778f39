// Host entry points of the emulator's own test kernels (c4u/simt_selftest.cuh). Threads per block: `threads`.
#pragma once
#include <cstdint>

namespace c4u {
namespace emulated {

void block_sum(const float* in, int64_t blocks, int64_t n_per_block, unsigned threads, float* out);
void warp_scan(const int32_t* in, int64_t n, unsigned threads, int32_t* out, int32_t* odd_count, int32_t* flags,
               unsigned long long* total);
void warp_max_xor(const float* in, int64_t n, unsigned threads, float* out);
void rotate_shared(const float* in, int64_t n, unsigned threads, bool with_barrier, float* out);
void two_sums(const float* in, int64_t blocks, unsigned threads, bool reuse_barrier, float* out);
void divergent_barrier(unsigned threads, unsigned active, float* out);
bool have_half();
void half_dot(const uint16_t* in_h, const uint16_t* in_b, int64_t blocks, unsigned threads, float* out);

}  // namespace emulated
}  // namespace c4u
