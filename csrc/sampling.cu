// CUDA launcher of the sampling kernel (c4u/sampling.cuh; contract in c4u/sampling.h).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "c4u/sampling.cuh"

namespace c4u {

void sample_cuda(const SamplingArgs& a, void* stream) {
  sampling::sample(
      [stream](void (*kernel)(SamplingArgs), dim3 grid, dim3 block, size_t smem, const SamplingArgs& args) {
        kernel<<<grid, block, smem, static_cast<cudaStream_t>(stream)>>>(args);
        const cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess) throw std::runtime_error(std::string("c4u sample: ") + cudaGetErrorString(err));
      },
      a);
}

}  // namespace c4u
