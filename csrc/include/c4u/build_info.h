// Build facts reported by `c4u info` and used by ops dispatch.
#pragma once
#include <string>

namespace c4u {

// Number of CUDA devices visible to the runtime; 0 when the module was built without CUDA
// or when no driver/device is present (never throws).
int cuda_device_count();

// Name of CUDA device `index`, or "" when it cannot be queried.
std::string cuda_device_name(int index);

}  // namespace c4u
