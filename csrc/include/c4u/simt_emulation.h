// SIMT emulation: compiles a CUDA kernel's own source (include/c4u/*.cuh) with the host compiler and runs a grid on
// the CPU, so the kernels execute on every CI run without a GPU (DESIGN.md, "Kernels without a GPU").
//
// Model. Blocks run one after another; inside a block, each CUDA thread is a fiber (ucontext) with its own stack.
// A fiber runs until it reaches a synchronisation point (__syncthreads, a warp shuffle / vote / __syncwarp) or
// returns; then the next fiber in the block's order runs. Threads are released from a barrier once every live thread
// of the block (or every lane of the warp mask) has arrived. The order of the fibers between two barriers is the
// schedule: forward, reverse, or a fresh shuffle per round (seeded; warps in a random order, the lanes of each in a
// random order), and blocks run in the same kind of order. A warp whose lanes all reach a warp intrinsic runs on
// at once, ahead of the other warps, until it reaches a block barrier (legal on a GPU). A
// kernel whose result depends on the schedule has a race (a missing barrier, a read of shared memory before it is
// written), which the tests expose by comparing schedules.
//
// Memory. `__shared__` variables live in the `c4u_smem` section and dynamic shared memory in a per-launch buffer;
// both are overwritten with 0xFF bytes (NaN for floats, -1 for ints) before every block, so a read of shared memory
// no thread of this block wrote shows up. Global memory is ordinary host memory; atomics are GCC __atomic builtins.
//
// Kernel source rules (all are ordinary CUDA): dynamic shared memory through C4U_DYNAMIC_SHARED (c4u/cuda_compat.h);
// `__shared__` variables without initialisers. Not emulated: Hopper-only instructions (wgmma, TMA), clusters,
// cooperative groups, textures, warp-synchronous code without _sync intrinsics (invalid since Volta anyway).
// Half and bf16 come from CUDA's own cuda_fp16.h / cuda_bf16.h in host mode when C4U_SIMT_CUDA_HEADERS is defined.
// One emulated launch at a time per process (a mutex serialises them).
#pragma once

#if defined(__CUDACC__)
#error "c4u/simt_emulation.h is for the host compiler; nvcc compiles the kernels natively"
#endif

#define C4U_SIMT_EMULATION 1

#if defined(C4U_SIMT_CUDA_HEADERS)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_types.h>  // dim3, uint3 (in host mode CUDA's __device__/__global__ expand to nothing)
#else
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#endif

#include <ucontext.h>

#include "c4u/simt_schedule.h"

#include <math.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

// Static shared memory: one instance per kernel (blocks run one at a time), in a section the launcher can poison.
#undef __shared__
#define __shared__ static __attribute__((section("c4u_smem"), aligned(16)))
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef warpSize
#define warpSize 32
#endif

namespace c4u {
namespace simt {

namespace detail {

enum class Wait : uint8_t { kRunnable, kBarrier, kWarp, kDone };

struct Fiber {
  ucontext_t ctx;
  uint3 tid;
  unsigned linear = 0;
  Wait wait = Wait::kRunnable;
  unsigned warp_mask = 0;
};

struct BlockState {
  dim3 grid, block;
  uint3 bid;
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  unsigned current = 0;
  std::vector<uint64_t> warp_slots;  // 32 lanes per warp: values in flight in a shuffle or vote
  unsigned char* dynamic_smem = nullptr;
  const std::function<void()>* body = nullptr;
  std::exception_ptr error;
};

BlockState& block();  // the block being run (a std::logic_error outside a launch)
inline Fiber& fiber() { return block().fibers[block().current]; }

// Runs body over the grid (defined in simt_emulation.cpp).
void run_grid(dim3 grid, dim3 block, size_t dynamic_smem_bytes, const std::function<void()>& body);

void barrier();                    // __syncthreads
void warp_wait(unsigned mask);     // one warp-level synchronisation of the lanes in mask
[[noreturn]] void fail(const std::string& what);

inline unsigned lane() { return fiber().linear % 32u; }
inline uint64_t& slot(unsigned l) { return block().warp_slots[(fiber().linear / 32u) * 32u + l]; }

template <class T>
T exchange(unsigned mask, T value, int src) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "warp exchange of at most 8 bytes");
  const unsigned me = lane();
  if (!((mask >> me) & 1u)) fail("warp intrinsic called by lane " + std::to_string(me) + " not in its mask");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  slot(me) = bits;
  warp_wait(mask);  // every lane of the mask has written its value
  T out = value;
  if (src != static_cast<int>(me)) {
    if (!((mask >> src) & 1u)) fail("warp shuffle reads lane " + std::to_string(src) + " outside the mask");
    std::memcpy(&out, &slot(static_cast<unsigned>(src)), sizeof(T));
  }
  warp_wait(mask);  // every lane has read before any slot is written again
  return out;
}

inline unsigned ballot(unsigned mask, bool predicate) {
  const unsigned me = lane();
  if (!((mask >> me) & 1u)) fail("warp vote called by lane " + std::to_string(me) + " not in its mask");
  slot(me) = predicate ? 1u : 0u;
  warp_wait(mask);
  unsigned bits = 0;
  for (unsigned l = 0; l < 32; ++l) {
    if (((mask >> l) & 1u) && slot(l)) bits |= 1u << l;
  }
  warp_wait(mask);
  return bits;
}

template <class T, class F>
T atomic_update(T* address, F update) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomics on 4- or 8-byte words");
  using Word = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  auto* word = reinterpret_cast<Word*>(address);
  Word expected = __atomic_load_n(word, __ATOMIC_RELAXED);
  for (;;) {
    T old;
    std::memcpy(&old, &expected, sizeof(T));
    const T next = update(old);
    Word desired;
    std::memcpy(&desired, &next, sizeof(T));
    if (__atomic_compare_exchange_n(word, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return old;
  }
}

}  // namespace detail

inline unsigned char* dynamic_shared_memory() { return detail::block().dynamic_smem; }

// Launch a kernel over a grid: the emulated `kernel<<<grid, block, dynamic_smem_bytes>>>(args...)`.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t dynamic_smem_bytes, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "kernel argument count");
  const std::function<void()> body = [&]() { kernel(static_cast<Params>(args)...); };
  detail::run_grid(grid, block, dynamic_smem_bytes, body);
}

}  // namespace simt
}  // namespace c4u

// ---- the CUDA names kernels use ------------------------------------------------------------------------------
#define threadIdx (::c4u::simt::detail::fiber().tid)
#define blockIdx (::c4u::simt::detail::block().bid)
#define blockDim (static_cast<const dim3&>(::c4u::simt::detail::block().block))
#define gridDim (static_cast<const dim3&>(::c4u::simt::detail::block().grid))

inline void __syncthreads() { ::c4u::simt::detail::barrier(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::c4u::simt::detail::warp_wait(mask); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <class T>
inline T __ldg(const T* p) {
  return *p;
}

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  const int me = static_cast<int>(::c4u::simt::detail::lane());
  return ::c4u::simt::detail::exchange(mask, var, (me & ~(width - 1)) + (src_lane & (width - 1)));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  const int me = static_cast<int>(::c4u::simt::detail::lane());
  const int src = me - static_cast<int>(delta);
  return ::c4u::simt::detail::exchange(mask, var, src < (me & ~(width - 1)) ? me : src);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  const int me = static_cast<int>(::c4u::simt::detail::lane());
  const int src = me + static_cast<int>(delta);
  return ::c4u::simt::detail::exchange(mask, var, src >= (me & ~(width - 1)) + width ? me : src);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  const int me = static_cast<int>(::c4u::simt::detail::lane());
  const int src = me ^ lane_mask;
  return ::c4u::simt::detail::exchange(mask, var, src >= (me & ~(width - 1)) + width ? me : src);
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return ::c4u::simt::detail::ballot(mask, predicate != 0);
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }

template <class T>
inline T atomicAdd(T* address, T value) {
  return ::c4u::simt::detail::atomic_update(address, [value](T old) { return static_cast<T>(old + value); });
}
template <class T>
inline T atomicSub(T* address, T value) {
  return ::c4u::simt::detail::atomic_update(address, [value](T old) { return static_cast<T>(old - value); });
}
template <class T>
inline T atomicMax(T* address, T value) {
  return ::c4u::simt::detail::atomic_update(address, [value](T old) { return old < value ? value : old; });
}
template <class T>
inline T atomicMin(T* address, T value) {
  return ::c4u::simt::detail::atomic_update(address, [value](T old) { return value < old ? value : old; });
}
template <class T>
inline T atomicExch(T* address, T value) {
  return ::c4u::simt::detail::atomic_update(address, [value](T) { return value; });
}
template <class T>
inline T atomicCAS(T* address, T compare, T value) {
  return ::c4u::simt::detail::atomic_update(address, [=](T old) { return old == compare ? value : old; });
}
