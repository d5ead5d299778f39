// The paged-KV CUDA source under the SIMT emulator: the same kernels and launch geometry as csrc/paged_kv.cu.
#include "c4u/simt_emulation.h"
// The kernel header follows the emulation header: it is CUDA source.
#include "c4u/paged_kv.cuh"
#include "emulated/emulated_launch.h"
#include "emulated/paged_kv_emulated.h"

namespace c4u {
namespace emulated {

void paged_kv_append(const PagedKVAppendArgs& a) { paged_kv::append(EmulatedLaunch{}, a); }
void paged_kv_copy_blocks(const PagedKVCopyArgs& a) { paged_kv::copy_blocks(EmulatedLaunch{}, a); }
void paged_kv_gather(const PagedKVGatherArgs& a) { paged_kv::gather(EmulatedLaunch{}, a); }

}  // namespace emulated
}  // namespace c4u
