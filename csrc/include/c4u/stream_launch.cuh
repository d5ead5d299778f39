// The launch callable the CUDA launchers pass to a kernel header's entry point (c4u/<op>.cuh): a <<<>>> launch on
// the caller's stream that turns a launch error into an exception naming the op. nvcc only.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace c4u {

struct StreamLaunch {
  cudaStream_t stream;
  const char* op;
  template <class... Params, class... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, Args&&... args) const {
    kernel<<<grid, block, smem, stream>>>(static_cast<Params>(args)...);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) throw std::runtime_error(std::string("c4u ") + op + ": " + cudaGetErrorString(err));
  }
};

}  // namespace c4u
