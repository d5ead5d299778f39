// CUDA launcher of the M-RoPE position kernel (c4u/mrope.cuh; contract in c4u/mrope.h).
#include "c4u/mrope.cuh"
#include "c4u/stream_launch.cuh"

namespace c4u {

void mrope_positions_cuda(const MropeArgs& a, void* stream) {
  mrope::positions(StreamLaunch{static_cast<cudaStream_t>(stream), "mrope_positions"}, a);
}

}  // namespace c4u
