// CUDA launchers of the paged-KV kernels (c4u/paged_kv.cuh; contracts in c4u/paged_kv.h). Asynchronous on the
// caller's stream; argument checks happen in c4u_engine/ops/paged_kv.py.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "c4u/paged_kv.cuh"

namespace c4u {
namespace {

struct StreamLaunch {
  cudaStream_t stream;
  const char* op;
  template <class... Params, class... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, Args... args) const {
    kernel<<<grid, block, smem, stream>>>(static_cast<Params>(args)...);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) throw std::runtime_error(std::string("c4u ") + op + ": " + cudaGetErrorString(err));
  }
};

}  // namespace

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
