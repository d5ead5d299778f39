// CUDA launcher of the embedding merge (c4u/embed_merge.cuh; contract in c4u/embed_merge.h).
#include "c4u/embed_merge.cuh"
#include "c4u/stream_launch.cuh"

namespace c4u {

void embed_merge_cuda(const EmbedMergeArgs& a, void* stream) {
  embed_merge::merge(StreamLaunch{static_cast<cudaStream_t>(stream), "embed_merge"}, a);
}

}  // namespace c4u
