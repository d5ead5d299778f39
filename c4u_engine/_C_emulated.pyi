# Type stubs for c4u_engine._C_emulated: CUDA kernel sources run on the CPU under the SIMT emulator (tests only;
# csrc/emulated/). Same raw-pointer conventions as _C, host memory standing in for device memory.
from c4u_engine._C import (
    embed_merge_cpu,
    mrope_positions_cpu,
    paged_kv_append_cpu,
    paged_kv_copy_blocks_cpu,
    paged_kv_gather_cpu,
    sample_cpu,
)

have_half: bool  # built with CUDA's cuda_fp16.h / cuda_bf16.h (half_dot available)

def set_schedule(order: str, seed: int = 0) -> None: ...  # "forward" | "reverse" | "shuffled"
def last_launch_stats() -> dict[str, int]: ...  # blocks, threads, barriers, warp_syncs of the last launch

# The emulator's own test kernels (csrc/include/c4u/simt_selftest.cuh).
def block_sum(in_: int, blocks: int, n_per_block: int, threads: int, out: int, /) -> None: ...
def warp_scan(in_: int, n: int, threads: int, out: int, odd: int, flags: int, total: int, /) -> None: ...
def warp_max_xor(in_: int, n: int, threads: int, out: int, /) -> None: ...
def rotate_shared(in_: int, n: int, threads: int, with_barrier: bool, out: int, /) -> None: ...
def divergent_barrier(threads: int, active: int, out: int, /) -> None: ...
def half_dot(in_h: int, in_b: int, blocks: int, threads: int, out: int, /) -> None: ...

paged_kv_append = paged_kv_append_cpu
paged_kv_copy_blocks = paged_kv_copy_blocks_cpu
paged_kv_gather = paged_kv_gather_cpu
sample = sample_cpu  # runs the kernel with two warps per block (the GPU launch uses eight)
embed_merge = embed_merge_cpu
mrope_positions = mrope_positions_cpu
