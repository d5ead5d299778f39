// The embedding-merge (c4u/embed_merge.cuh) and M-RoPE (c4u/mrope.cuh) kernels under the SIMT emulator.
#pragma once
#include "c4u/embed_merge.h"
#include "c4u/mrope.h"

namespace c4u {
namespace emulated {

void embed_merge(const EmbedMergeArgs& a);
void mrope_positions(const MropeArgs& a);

}  // namespace emulated
}  // namespace c4u
