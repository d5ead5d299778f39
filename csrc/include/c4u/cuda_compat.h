// What kernel sources (include/c4u/*.cuh) need to compile both under nvcc and under the SIMT emulator
// (c4u/simt_emulation.h, which a host-compiled file includes first).
#pragma once

#if defined(C4U_SIMT_EMULATION)
// The emulator hands each block a poisoned buffer of the launch's dynamic shared memory size.
#define C4U_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::c4u::simt::dynamic_shared_memory())
#elif defined(__CUDACC__)
#define C4U_DYNAMIC_SHARED(T, name)                                 \
  extern __shared__ __align__(16) unsigned char c4u_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(c4u_dynamic_smem_)
#else
#error "include c4u/simt_emulation.h before a kernel header when compiling with the host compiler"
#endif
