// The sampling kernel (c4u/sampling.cuh) under the SIMT emulator, on host memory; contract in c4u/sampling.h.
#pragma once
#include "c4u/sampling.h"

namespace c4u {
namespace emulated {

void sample(const SamplingArgs& a);

}  // namespace emulated
}  // namespace c4u
