// The cascade decode attention CUDA source under the SIMT emulator: the same kernels and launch geometry as
// csrc/cascade_attention.cu.
#include "c4u/simt_emulation.h"
// The kernel header follows the emulation header: it is CUDA source.
#include "c4u/cascade_attention.cuh"
#include "emulated/cascade_attention_emulated.h"
#include "emulated/emulated_launch.h"

namespace c4u {
namespace emulated {

void cascade_attention(const CascadeAttentionArgs& a) { cascade::run(EmulatedLaunch{}, a); }

}  // namespace emulated
}  // namespace c4u
