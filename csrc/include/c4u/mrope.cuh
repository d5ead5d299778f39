// M-RoPE position kernel (contract: c4u/mrope.h; reference: csrc/mrope.cpp). grid (slot chunks, batch): one thread
// per slot finds its span by binary search over the row's spans, staged in shared memory when they fit.
#pragma once
#include <cstdint>

#include "c4u/cuda_compat.h"
#include "c4u/mrope.h"

namespace c4u {
namespace mrope {

constexpr unsigned kThreads = 128;
constexpr int kStagedSpans = 256;  // a row's span starts staged in shared memory (longer rows read global memory)

__device__ __forceinline__ void position_of(const MropeArgs& a, int32_t span, int64_t slot, int64_t* p) {
  const int64_t k = slot - a.slot_start[span];
  const int64_t base = a.pos_start[span];
  const int32_t* g = a.grid + 3 * span;
  if (g[0] == 0) {
    p[0] = p[1] = p[2] = base + k;
  } else {
    const int64_t hw = static_cast<int64_t>(g[1]) * g[2];
    p[0] = base + k / hw;
    p[1] = base + (k / g[2]) % g[1];
    p[2] = base + k % g[2];
  }
}

__global__ void positions_kernel(MropeArgs a) {
  __shared__ int32_t starts[kStagedSpans];
  const int64_t b = blockIdx.y;
  const int32_t first = a.row_spans[b], count = a.row_spans[b + 1] - first;
  const bool staged = count <= kStagedSpans;
  if (staged) {
    for (int32_t i = threadIdx.x; i < count; i += blockDim.x) starts[i] = a.slot_start[first + i];
  }
  __syncthreads();
  for (int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; s < a.seq;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // Last span starting at or before s.
    int32_t lo = 0, hi = count;
    while (lo < hi) {
      const int32_t mid = (lo + hi) / 2;
      const int32_t start = staged ? starts[mid] : a.slot_start[first + mid];
      if (start <= s) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    int64_t p[3] = {0, 0, 0};
    const int32_t span = first + lo - 1;
    if (lo > 0 && s < static_cast<int64_t>(a.slot_start[span]) + a.length[span]) position_of(a, span, s, p);
    for (int axis = 0; axis < 3; ++axis) a.out[(axis * a.batch + b) * a.seq + s] = p[axis];
  }
}

template <class Launch>
void positions(Launch&& launch, const MropeArgs& a) {
  if (a.batch == 0 || a.seq == 0) return;
  int64_t chunks = (a.seq + kThreads - 1) / kThreads;
  chunks = chunks > 4096 ? 4096 : chunks;
  launch(positions_kernel, dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(a.batch)), dim3(kThreads),
         size_t(0), a);
}

}  // namespace mrope
}  // namespace c4u
