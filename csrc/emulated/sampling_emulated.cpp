// The sampling kernel's CUDA source under the SIMT emulator. Two warps per block instead of the GPU's eight: the
// kernel takes any multiple of 32, two still exercise the cross-warp reductions, and CI pays a quarter of the
// fiber switches.
#include "c4u/simt_emulation.h"
// The kernel header follows the emulation header: it is CUDA source.
#include "c4u/sampling.cuh"
#include "emulated/emulated_launch.h"
#include "emulated/sampling_emulated.h"

namespace c4u {
namespace emulated {

void sample(const SamplingArgs& a) {
  sampling::sample(EmulatedLaunch{}, a, 64);
}

}  // namespace emulated
}  // namespace c4u
