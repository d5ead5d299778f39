// The embedding-merge and M-RoPE kernels' CUDA source under the SIMT emulator (same launch geometry as the .cu).
#include "c4u/simt_emulation.h"
// The kernel headers follow the emulation header: they are CUDA source.
#include "c4u/embed_merge.cuh"
#include "c4u/mrope.cuh"
#include "emulated/embed_mrope_emulated.h"
#include "emulated/emulated_launch.h"

namespace c4u {
namespace emulated {

void embed_merge(const EmbedMergeArgs& a) { embed_merge::merge(EmulatedLaunch{}, a); }
void mrope_positions(const MropeArgs& a) { mrope::positions(EmulatedLaunch{}, a); }

}  // namespace emulated
}  // namespace c4u
