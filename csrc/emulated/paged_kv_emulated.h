// The paged-KV kernels (c4u/paged_kv.cuh) run under the SIMT emulator, on host memory; contracts in c4u/paged_kv.h.
#pragma once
#include "c4u/paged_kv.h"

namespace c4u {
namespace emulated {

void paged_kv_append(const PagedKVAppendArgs& a);
void paged_kv_copy_blocks(const PagedKVCopyArgs& a);
void paged_kv_gather(const PagedKVGatherArgs& a);

}  // namespace emulated
}  // namespace c4u
