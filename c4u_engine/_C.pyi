# Type stubs for the private native module c4u_engine._C. Call it through c4u_engine.ops, which checks arguments.
# Pointers are raw addresses (ints); sizes are flat [n * 2] lists of (height, width). See csrc/include/c4u/*.h.
with_cuda: bool
cuda_archs: str

def cuda_device_count() -> int: ...
def cuda_device_name(index: int) -> str: ...

# Batched Qwen2-VL preprocessing (csrc/include/c4u/preprocess.h); Python face: c4u_engine/ops/preprocess.py.
# pillow_vertical_first: follow Pillow >= 13's pass order (see ops.preprocess.pillow_runs_vertical_first).
def preprocess_cpu(
    src: list[int],
    src_hw: list[int],
    dst_hw: list[int],
    out: int,
    out_rows: int,
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
    rescale_factor: float,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    pillow_vertical_first: bool,
) -> None: ...

# Only in CUDA builds (with_cuda is True).
def preprocess_cuda_workspace_bytes(
    src_hw: list[int],
    dst_hw: list[int],
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
    rescale_factor: float,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    pillow_vertical_first: bool,
) -> int: ...
def preprocess_cuda(
    src: list[int],
    src_hw: list[int],
    dst_hw: list[int],
    out: int,
    out_rows: int,
    workspace: int,
    workspace_bytes: int,
    stream: int,
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
    rescale_factor: float,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    pillow_vertical_first: bool,
) -> None: ...

# Paged KV (csrc/include/c4u/paged_kv.h); Python face: c4u_engine/ops/paged_kv.py, which checks every argument.
# layout: (num_blocks, kv_heads, block_size, head_dim, elem_bytes); pools [num_blocks, kv_heads, block_size,
# head_dim]; metadata pointers are int32 arrays on the kernel's device; stream: a cudaStream_t (0 for the CPU twin).
# The *_cuda variants (same signatures) exist only in CUDA builds.
def paged_kv_append_cpu(
    layout: tuple[int, int, int, int, int],
    pool_k: int,
    pool_v: int,
    block_tables: int,
    batch: int,
    max_blocks: int,
    seq_lens: int,
    append_lens: int,
    src_start: int,
    src_k: int,
    src_v: int,
    src_len: int,
    max_append: int,
    stream: int,
) -> None: ...
def paged_kv_copy_blocks_cpu(
    layout: tuple[int, int, int, int, int],
    pool_k: int,
    pool_v: int,
    src_blocks: int,
    dst_blocks: int,
    n_slots: int,
    n: int,
    stream: int,
) -> None: ...
def paged_kv_gather_cpu(
    layout: tuple[int, int, int, int, int],
    pool_k: int,
    pool_v: int,
    block_tables: int,
    batch: int,
    max_blocks: int,
    seq_lens: int,
    out_k: int,
    out_v: int,
    out_len: int,
    stream: int,
) -> None: ...
paged_kv_append_cuda = paged_kv_append_cpu
paged_kv_copy_blocks_cuda = paged_kv_copy_blocks_cpu
paged_kv_gather_cuda = paged_kv_gather_cpu
