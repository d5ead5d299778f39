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

# Batched sampling (csrc/include/c4u/sampling.h); Python face: c4u_engine/ops/sampling.py. Pointers: logits float32
# [batch, vocab]; temperature float32, top_k int32, top_p float32, offsets uint64, ban_row int32 [batch]; banned int32
# [n_banned]; out int32 [batch]. sample_cuda (CUDA builds) has the same signature.
def sample_cpu(
    logits: int,
    batch: int,
    vocab: int,
    temperature: int,
    top_k: int,
    top_p: int,
    offsets: int,
    ban_row: int,
    banned: int,
    n_banned: int,
    seed: int,
    out: int,
    stream: int,
) -> None: ...
sample_cuda = sample_cpu
# The Philox4x32-10 block the samplers draw from: 4 output words of (counter, key).
def philox4x32_10(counter: tuple[int, int, int, int], key: tuple[int, int]) -> tuple[int, int, int, int]: ...
# (exp(x) for x <= 0, log(x) for positive normal x) as the samplers compute them (basic IEEE operations only, the
# same bits on host and device); NaN where x is outside that function's domain.
def sampling_exp_log(x: list[float]) -> tuple[list[float], list[float]]: ...
# The Gumbel noise -log(-log(u)) the samplers derive from one Philox output word (u from its 23 high bits).
def sampling_gumbel_of_word(words: list[int]) -> list[float]: ...

# Image-embedding merge (csrc/include/c4u/embed_merge.h; ops/embed_merge.py) and M-RoPE position ids
# (csrc/include/c4u/mrope.h; ops/mrope.py). The *_cuda variants (CUDA builds) have the same signatures.
def embed_merge_cpu(
    table: int,
    ids: int,
    image_index: int,
    image_embeds: int,
    out: int,
    n_tokens: int,
    hidden: int,
    elem_bytes: int,
    stream: int,
) -> None: ...
def mrope_positions_cpu(
    row_spans: int,
    slot_start: int,
    length: int,
    pos_start: int,
    grid: int,
    out: int,
    batch: int,
    seq: int,
    stream: int,
) -> None: ...
embed_merge_cuda = embed_merge_cpu
mrope_positions_cuda = mrope_positions_cpu

# Cascade (shared-prefix) decode attention over paged KV (csrc/include/c4u/cascade_attention.h); Python face:
# c4u_engine/ops/cascade_attention.py. shape: (num_blocks, kv_heads, block_size, head_dim, q_heads, elem_bytes,
# is_bf16); workspace: float32 [shared_splits + 1, rows, q_heads, head_dim + 2] (the twin uses [2, ...] and ignores
# shared_splits). cascade_attention_cuda exists only in CUDA builds.
def cascade_attention_cpu(
    shape: tuple[int, int, int, int, int, int, int],
    scale: float,
    q: int,
    pool_k: int,
    pool_v: int,
    group_rows: int,
    groups: int,
    shared_tables: int,
    max_shared_blocks: int,
    shared_lens: int,
    block_tables: int,
    rows: int,
    max_blocks: int,
    seq_lens: int,
    max_group_rows: int,
    out: int,
    workspace: int,
    stream: int,
    shared_splits: int = 1,
) -> None: ...
cascade_attention_cuda = cascade_attention_cpu
