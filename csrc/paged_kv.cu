// CUDA launchers of the paged-KV kernels (c4u/paged_kv.cuh; contracts in c4u/paged_kv.h). Asynchronous on the
// caller's stream; argument checks happen in c4u_engine/ops/paged_kv.py.
#include "c4u/paged_kv.cuh"
#include "c4u/stream_launch.cuh"

namespace c4u {

void paged_kv_append_cuda(const PagedKVAppendArgs& a, void* stream) {
  paged_kv::append(StreamLaunch{static_cast<cudaStream_t>(stream), "paged_kv_append"}, a);
}

void paged_kv_copy_blocks_cuda(const PagedKVCopyArgs& a, void* stream) {
  paged_kv::copy_blocks(StreamLaunch{static_cast<cudaStream_t>(stream), "paged_kv_copy_blocks"}, a);
}

void paged_kv_gather_cuda(const PagedKVGatherArgs& a, void* stream) {
  paged_kv::gather(StreamLaunch{static_cast<cudaStream_t>(stream), "paged_kv_gather"}, a);
}

}  // namespace c4u
