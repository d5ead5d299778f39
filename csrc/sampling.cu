// CUDA launcher of the sampling kernel (c4u/sampling.cuh; contract in c4u/sampling.h).
#include "c4u/sampling.cuh"
#include "c4u/stream_launch.cuh"

namespace c4u {

void sample_cuda(const SamplingArgs& a, void* stream) {
  sampling::sample(StreamLaunch{static_cast<cudaStream_t>(stream), "sample"}, a);
}

}  // namespace c4u
