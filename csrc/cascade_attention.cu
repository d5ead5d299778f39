// CUDA launcher of the cascade decode attention kernels (c4u/cascade_attention.cuh; contract in
// c4u/cascade_attention.h).
#include "c4u/cascade_attention.cuh"
#include "c4u/stream_launch.cuh"

namespace c4u {

void cascade_attention_cuda(const CascadeAttentionArgs& a, void* stream) {
  cascade::run(StreamLaunch{static_cast<cudaStream_t>(stream), "cascade_attention"}, a);
}

}  // namespace c4u
