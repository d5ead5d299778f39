// The SIMT emulator's launcher and scheduler (see c4u/simt_emulation.h for the model).
#include "c4u/simt_emulation.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <mutex>
#include <numeric>
#include <random>

// The linker defines these around the c4u_smem section (absent, hence weak, when no kernel uses __shared__).
extern "C" {
extern unsigned char __start_c4u_smem[] __attribute__((weak));
extern unsigned char __stop_c4u_smem[] __attribute__((weak));
}

namespace c4u {
namespace simt {
namespace {

constexpr size_t kStackBytes = 256 * 1024;  // per fiber; kernels keep little on the stack
constexpr unsigned kMaxThreads = 1024;
constexpr size_t kMaxDynamicSmem = 227 * 1024;  // Hopper's opt-in maximum per block
constexpr unsigned char kPoison = 0xFF;

std::mutex g_launch_mutex;
Schedule g_schedule;
LaunchStats g_stats;
detail::BlockState* g_block = nullptr;

// Fiber stacks with a guard page below each, so an overflow faults instead of corrupting a neighbour.
class Stacks {
 public:
  explicit Stacks(size_t n) : page_(static_cast<size_t>(sysconf(_SC_PAGESIZE))), n_(n) {
    bytes_ = n_ * (kStackBytes + page_);
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("simt: cannot map fiber stacks");
    base_ = static_cast<unsigned char*>(p);
    for (size_t i = 0; i < n_; ++i) mprotect(base_ + i * (kStackBytes + page_), page_, PROT_NONE);
  }
  ~Stacks() { munmap(base_, bytes_); }
  Stacks(const Stacks&) = delete;
  Stacks& operator=(const Stacks&) = delete;
  unsigned char* stack(size_t i) const { return base_ + i * (kStackBytes + page_) + page_; }

 private:
  size_t page_, n_, bytes_ = 0;
  unsigned char* base_ = nullptr;
};

void fiber_main() {
  detail::BlockState& b = *g_block;
  try {
    (*b.body)();
  } catch (...) {
    if (!b.error) b.error = std::current_exception();
  }
  b.fibers[b.current].wait = detail::Wait::kDone;
  // Returning resumes uc_link: the scheduler.
}

void yield() {
  detail::BlockState& b = *g_block;
  swapcontext(&b.fibers[b.current].ctx, &b.scheduler);
}

// The order to run n items in. Shuffled orders permute groups of `group` consecutive items (warps, for threads) and
// the items inside each group: warps run as units, the way a GPU issues them, in a random order.
std::vector<unsigned> order_of(size_t n, Order order, std::mt19937_64& rng, size_t group = 1) {
  std::vector<unsigned> idx(n);
  std::iota(idx.begin(), idx.end(), 0u);
  if (order == Order::kReverse) std::reverse(idx.begin(), idx.end());
  if (order == Order::kShuffled) {
    std::vector<unsigned> groups((n + group - 1) / group);
    std::iota(groups.begin(), groups.end(), 0u);
    std::shuffle(groups.begin(), groups.end(), rng);
    idx.clear();
    for (unsigned g : groups) {
      const size_t first = idx.size();
      for (size_t i = g * group; i < std::min(n, (g + 1) * group); ++i) idx.push_back(static_cast<unsigned>(i));
      std::shuffle(idx.begin() + static_cast<std::ptrdiff_t>(first), idx.end(), rng);
    }
  }
  return idx;
}

// Releases fiber i's warp group (the lanes of its mask) once every lane has arrived with the same mask; appends the
// released fibers to `released`. A mask naming a lane that does not exist or has exited is an error.
bool try_release_warp(detail::BlockState& b, size_t i, std::vector<unsigned>& released) {
  const detail::Fiber& f = b.fibers[i];
  if (f.wait != detail::Wait::kWarp) return false;
  const size_t n = b.fibers.size(), warp_base = i / 32 * 32;
  for (unsigned l = 0; l < 32; ++l) {
    if (!((f.warp_mask >> l) & 1u)) continue;
    const size_t j = warp_base + l;
    if (j >= n) detail::fail("warp mask names lane " + std::to_string(l) + ", beyond the block's threads");
    const detail::Fiber& g = b.fibers[j];
    if (g.wait == detail::Wait::kDone) {
      detail::fail("warp mask names lane " + std::to_string(l) + ", which has exited");
    }
    if (g.wait != detail::Wait::kWarp || g.warp_mask != f.warp_mask) return false;
  }
  const unsigned mask = f.warp_mask;
  for (unsigned l = 0; l < 32; ++l) {
    if ((mask >> l) & 1u) {
      b.fibers[warp_base + l].wait = detail::Wait::kRunnable;
      released.push_back(static_cast<unsigned>(warp_base + l));
    }
  }
  ++g_stats.warp_syncs;
  return true;
}

std::string describe_deadlock(const detail::BlockState& b) {
  size_t at_barrier = 0, at_warp = 0, done = 0;
  for (const auto& f : b.fibers) {
    at_barrier += f.wait == detail::Wait::kBarrier;
    at_warp += f.wait == detail::Wait::kWarp;
    done += f.wait == detail::Wait::kDone;
  }
  return "simt: deadlock in block (" + std::to_string(b.bid.x) + "," + std::to_string(b.bid.y) + "," +
         std::to_string(b.bid.z) + "): " + std::to_string(at_barrier) + " threads at __syncthreads, " +
         std::to_string(at_warp) + " at a warp intrinsic whose lanes never all arrive, " + std::to_string(done) +
         " exited";
}

// Runs one block. Fibers run one at a time in the schedule's order; a warp whose lanes all reach a warp intrinsic
// is released and run again at once, ahead of the other warps (warps are independent between block barriers, so
// one racing ahead is a legal schedule, and the one that exposes a warp overwriting shared memory that another
// warp has not read yet). At a block barrier everyone waits; then the next round starts in a fresh order.
void run_block(detail::BlockState& b, const Stacks& stacks, std::mt19937_64& rng) {
  const size_t n = b.fibers.size();
  for (size_t i = 0; i < n; ++i) {
    detail::Fiber& f = b.fibers[i];
    f.wait = detail::Wait::kRunnable;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stacks.stack(i);
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &b.scheduler;
    makecontext(&f.ctx, fiber_main, 0);
  }
  std::deque<unsigned> ready;
  auto refill = [&]() {
    for (unsigned i : order_of(n, g_schedule.order, rng, 32)) {
      if (b.fibers[i].wait == detail::Wait::kRunnable) ready.push_back(i);
    }
  };
  refill();
  std::vector<unsigned> released;
  size_t done = 0;
  while (done < n) {
    if (ready.empty()) {
      size_t at_barrier = 0;
      for (const auto& f : b.fibers) at_barrier += f.wait == detail::Wait::kBarrier;
      if (at_barrier > 0 && at_barrier + done == n) {  // exited threads count as arrived
        for (auto& f : b.fibers) {
          if (f.wait == detail::Wait::kBarrier) f.wait = detail::Wait::kRunnable;
        }
        ++g_stats.barriers;
        refill();
        continue;
      }
      for (size_t i = 0; i < n; ++i) try_release_warp(b, i, released);  // reports lanes that exited
      throw std::runtime_error(describe_deadlock(b));
    }
    const unsigned i = ready.front();
    ready.pop_front();
    if (b.fibers[i].wait != detail::Wait::kRunnable) continue;
    b.current = i;
    swapcontext(&b.scheduler, &b.fibers[i].ctx);
    if (b.error) std::rethrow_exception(b.error);
    if (b.fibers[i].wait == detail::Wait::kDone) {
      ++done;
      continue;
    }
    released.clear();
    if (try_release_warp(b, i, released)) {
      std::vector<unsigned> next = order_of(released.size(), g_schedule.order, rng);
      for (auto it = next.rbegin(); it != next.rend(); ++it) ready.push_front(released[*it]);
    }
  }
}

}  // namespace

void set_schedule(Schedule s) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  g_schedule = s;
}

Schedule schedule() {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  return g_schedule;
}

LaunchStats last_launch_stats() {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  return g_stats;
}

namespace detail {

BlockState& block() {
  if (g_block == nullptr) throw std::logic_error("simt: a CUDA built-in was used outside an emulated launch");
  return *g_block;
}

void fail(const std::string& what) { throw std::runtime_error("simt: " + what); }

void barrier() {
  block().fibers[block().current].wait = Wait::kBarrier;
  yield();
}

void warp_wait(unsigned mask) {
  Fiber& f = block().fibers[block().current];
  if (!((mask >> (f.linear % 32u)) & 1u)) fail("__syncwarp by a lane not in its mask");
  f.wait = Wait::kWarp;
  f.warp_mask = mask;
  yield();
}

void run_grid(dim3 grid, dim3 block_dim, size_t dynamic_smem_bytes, const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  const uint64_t threads = uint64_t(block_dim.x) * block_dim.y * block_dim.z;
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  if (threads == 0 || threads > kMaxThreads) {
    throw std::invalid_argument("simt: a block has " + std::to_string(threads) + " threads (1 to 1024 allowed)");
  }
  if (grid.y > 65535 || grid.z > 65535) throw std::invalid_argument("simt: gridDim.y and .z are at most 65535");
  if (dynamic_smem_bytes > kMaxDynamicSmem) {
    throw std::invalid_argument("simt: " + std::to_string(dynamic_smem_bytes) + " bytes of dynamic shared memory");
  }
  g_stats = LaunchStats{};
  if (blocks == 0) return;
  Stacks stacks(threads);
  std::vector<unsigned char> smem(std::max<size_t>(dynamic_smem_bytes, 1));
  BlockState b;
  b.grid = grid;
  b.block = block_dim;
  b.fibers.resize(threads);
  b.warp_slots.assign((threads + 31) / 32 * 32, 0);
  b.dynamic_smem = smem.data();
  b.body = &body;
  for (unsigned z = 0, i = 0; z < block_dim.z; ++z) {
    for (unsigned y = 0; y < block_dim.y; ++y) {
      for (unsigned x = 0; x < block_dim.x; ++x, ++i) {
        b.fibers[i].tid = uint3{x, y, z};
        b.fibers[i].linear = i;
      }
    }
  }
  std::mt19937_64 rng(g_schedule.seed);
  struct Restore {
    ~Restore() { g_block = nullptr; }
  } restore;
  g_block = &b;
  for (uint64_t k : order_of(blocks, g_schedule.order, rng)) {
    b.bid = uint3{static_cast<unsigned>(k % grid.x), static_cast<unsigned>(k / grid.x % grid.y),
                  static_cast<unsigned>(k / grid.x / grid.y)};
    std::fill(smem.begin(), smem.end(), kPoison);
    if (__start_c4u_smem != nullptr && __stop_c4u_smem != nullptr) {
      std::memset(__start_c4u_smem, kPoison, static_cast<size_t>(__stop_c4u_smem - __start_c4u_smem));
    }
    run_block(b, stacks, rng);
    ++g_stats.blocks;
    g_stats.threads += static_cast<int64_t>(threads);
  }
}

}  // namespace detail
}  // namespace simt
}  // namespace c4u
