// CPU-build fallbacks for the device queries in build_info.h.
#include "c4u/build_info.h"

#ifndef C4U_WITH_CUDA
namespace c4u {
int cuda_device_count() { return 0; }
std::string cuda_device_name(int) { return ""; }
}  // namespace c4u
#endif
