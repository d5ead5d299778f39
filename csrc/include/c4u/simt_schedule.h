// The SIMT emulator's schedule and counters (c4u/simt_emulation.h), without the CUDA names that header defines:
// what the emulated module's bindings need.
#pragma once
#include <cstdint>

namespace c4u {
namespace simt {

enum class Order { kForward = 0, kReverse = 1, kShuffled = 2 };

struct Schedule {
  Order order = Order::kForward;
  uint64_t seed = 0;
};

// The schedule the next launches use (the emulated module's set_schedule).
void set_schedule(Schedule s);
Schedule schedule();

// Counters of the last launch, for tests that check the emulator really switched fibers.
struct LaunchStats {
  int64_t blocks = 0;
  int64_t threads = 0;
  int64_t barriers = 0;    // block-wide barrier releases
  int64_t warp_syncs = 0;  // warp-level releases (shuffles, votes, __syncwarp)
};
LaunchStats last_launch_stats();

}  // namespace simt
}  // namespace c4u
