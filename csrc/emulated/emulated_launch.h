// The launch callable the emulated launchers pass to a kernel header's entry point (c4u/<op>.cuh): simt::launch.
// Include after c4u/simt_emulation.h.
#pragma once

namespace c4u {
namespace emulated {

struct EmulatedLaunch {
  template <class... Params, class... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, Args&&... args) const {
    simt::launch(kernel, grid, block, smem, static_cast<Params>(args)...);
  }
};

}  // namespace emulated
}  // namespace c4u
