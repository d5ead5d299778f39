// The cascade decode attention kernels (c4u/cascade_attention.cuh) under the SIMT emulator, on host memory;
// contract in c4u/cascade_attention.h.
#pragma once
#include "c4u/cascade_attention.h"

namespace c4u {
namespace emulated {

void cascade_attention(const CascadeAttentionArgs& a);

}  // namespace emulated
}  // namespace c4u
