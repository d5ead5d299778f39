"""The runner contract: what the engine asks of a model runtime (torch, onnxruntime, tensorrt).

The engine speaks numpy for everything small (token ids, positions, masks, logits) and treats two things as opaque,
runner-owned values: embeddings (`Embeds`) and KV caches (`KV`). A runner keeps those wherever it computes (torch
tensors on a device, numpy arrays for onnxruntime) so nothing crosses the host boundary between steps.

KV layout, every runner: per layer K and V of [batch, kv_heads, length, head_dim]. Which slots of `length` are real is
the engine's business: it passes an attention mask with every forward call, so padded slots are simply never attended.

A runner may keep spare capacity behind a KV (`reserve`) and append to it in place. The rule that keeps this safe:
a KV passed as `past` to forward is handed over; the caller uses only the returned KV afterwards. Shared KVs (the
KV store's entries, engine/kv_store.py) are therefore only ever read through kv_select / kv_stack, which copy.
One exception, in the torch runner's kernel mode (runners/kernel_mode.py): decode rows kept in the paged store's
block pools (runners/paged_rows.py) share their entry's blocks by reference count; kv_select / kv_stack hand those
rows over instead of copying, and kv_release gives their blocks back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from c4u_engine.errors import InvalidInputError

Embeds = Any
KV = Any


@dataclass(frozen=True)
class RunnerCapabilities:
    """What a runner can do, declared by the runner and read by the engine (which never imports a runner module
    nor probes attributes).

    concurrent_calls: calls from several threads run at the same time (engine lanes); False: they queue.
    paged_kv: its KV buffers are exposed (kv_layers / kv_empty), so the paged KV layout can hold its entries.
    paged_decode_rows: reasoning rows may decode in the paged store's pools (the torch runner's kernel mode).
    kernel_device: where the native kernels run in kernel mode ("cuda" | "cpu" | "emulated"), None outside it.
    device_pixels: encode_images also takes pixel values on the runner's device (the engine preprocesses there).
    intra_op_threads: threads one call uses (None: the runtime's own choice).
    """

    concurrent_calls: bool
    paged_kv: bool
    paged_decode_rows: bool
    kernel_device: str | None
    device_pixels: bool
    intra_op_threads: int | None


class Runner(ABC):
    """One model runtime. Subclasses set `name` and `device`, call `_set_model_facts(config)` once, and implement
    `_forward`: the base class's `forward` checks the arguments (the same checks and messages for every runner)."""

    name: str = "abstract"
    device: str = "cpu"
    # True: encode_images also takes pixel values as a torch tensor on the runner's device, so the engine
    # preprocesses on the GPU (engine/pixels.py) instead of uploading host pixels.
    takes_device_pixels: bool = False
    # True: calls from several threads run at the same time (engine lanes, engine/lanes.py); False: they queue.
    runs_concurrently: bool = False
    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int

    intra_op_threads: int | None = None

    @property
    def capabilities(self) -> RunnerCapabilities:
        """This runner's declaration (see RunnerCapabilities); kernel mode may change it at run time."""
        kernels = self.kernels
        return RunnerCapabilities(
            concurrent_calls=self.runs_concurrently, paged_kv=type(self).kv_layers is not Runner.kv_layers,
            paged_decode_rows=kernels is not None, kernel_device=None if kernels is None else kernels.device,
            device_pixels=self.takes_device_pixels, intra_op_threads=self.intra_op_threads)

    @property
    def precision(self) -> str:
        """fp32 | fp16 | bf16 | int8 | int4 (runners/precision.py); a float runner's is its dtype's."""
        from c4u_engine.runners.precision import normalize_precision

        return normalize_precision(str(getattr(self, "dtype", "float32")).removeprefix("torch."))

    @abstractmethod
    def encode_images(self, pixel_values: np.ndarray, grid_thw: np.ndarray) -> list[Embeds]:
        """Vision tower over many images in one call.

        pixel_values: float32 [sum_patches, 3*T*P*P] in Qwen's patch layout; grid_thw: int64 [n, 3].
        Returns one embedding block per image, [t*h*w // merge**2, hidden].
        """

    @abstractmethod
    def embed(self, input_ids: np.ndarray, image_embeds: Sequence[Embeds]) -> Embeds:
        """Token embeddings [B, S, hidden] with image-pad positions filled, in row-major order, from image_embeds
        (concatenated in order). The engine guarantees the counts match."""

    image_token_id: int
    # runners/kernel_mode.py's KernelMode while the engine's per-token work runs through the native kernels
    # (TorchRunner.use_kernels); None: each runner's own path
    kernels = None

    def _set_model_facts(self, config: Any) -> None:
        """The model facts above from a Qwen2.5-VL config (models/config.py: .text and .image_token_id), once."""
        text = config.text
        self.num_layers = int(text.num_hidden_layers)
        self.num_kv_heads = int(text.num_key_value_heads)
        self.head_dim = int(text.head_dim)
        self.hidden_size = int(text.hidden_size)
        self.vocab_size = int(text.vocab_size)
        self.image_token_id = int(config.image_token_id)

    def forward(
        self,
        embeds: Embeds,
        position_ids: np.ndarray,
        past: KV | None,
        attention_mask: np.ndarray,
        logits_index: np.ndarray,
        reserve: int = 0,
    ) -> tuple[np.ndarray, KV]:
        """One decoder pass (prefill or decode).

        embeds [B, S, hidden]; position_ids int64 [3, B, S] (M-RoPE); past: KV of length P or None (P = 0);
        attention_mask bool [B, P + S] (True = may be attended; causality among the S new tokens is implied);
        logits_index int64 [B, K]: positions within S whose logits are returned.
        reserve: spare slots worth keeping after the new tokens (the caller will decode that many); a hint.
        Returns (logits float32 [B, K, vocab], KV of length P + S).
        Arguments are checked here (InvalidInputError naming the first bad one), then `_forward` runs.
        """
        shape = tuple(int(n) for n in getattr(embeds, "shape", ()))
        if len(shape) != 3 or shape[2] != self.hidden_size:
            raise InvalidInputError(f"embeds must be [B, S, {self.hidden_size}] (from embed()), got "
                                    f"{type(embeds).__name__} {list(shape)}")
        b, s = shape[0], shape[1]
        p = 0 if past is None else int(self.kv_length(past))
        for name, value, want in (("position_ids", position_ids, (3, b, s)),
                                  ("attention_mask", attention_mask, (b, p + s))):
            found = tuple(int(n) for n in np.shape(value))
            if found != want:
                raise InvalidInputError(f"{name} must be {list(want)} ([3, B, S] / [B, P + S]), got {list(found)}")
        index = np.asarray(logits_index)
        if index.ndim != 2 or index.shape[0] != b:
            raise InvalidInputError(f"logits_index must be [{b}, K], got {list(index.shape)}")
        if index.size and (index.min() < 0 or index.max() >= s):
            raise InvalidInputError(f"logits_index must lie in [0, S = {s}), got {index.min()}..{index.max()}")
        if int(reserve) < 0:
            raise InvalidInputError(f"reserve must be >= 0, got {reserve}")
        return self._forward(embeds, position_ids, past, attention_mask, logits_index, int(reserve))

    @abstractmethod
    def _forward(self, embeds: Embeds, position_ids: np.ndarray, past: KV | None, attention_mask: np.ndarray,
                 logits_index: np.ndarray, reserve: int) -> tuple[np.ndarray, KV]:
        """forward after its arguments were checked (same contract)."""

    @abstractmethod
    def kv_select(self, kv: KV, rows: Sequence[int], length: int | None = None, reserve: int = 0) -> KV:
        """Rows of a batched KV (repeats allowed, always a copy), cut to the first `length` slots when given;
        `reserve` as in forward."""

    @abstractmethod
    def kv_stack(self, kvs: Sequence[KV], length: int, reserve: int = 0) -> KV:
        """Concatenate KVs (any batch sizes) along the batch axis, rows in order, into one new KV (a copy), each
        right-padded (with zeros) to `length` slots; `reserve` as in forward. The engine merges reasoning rows that
        join a running decode batch with it (continuous batching)."""

    @abstractmethod
    def kv_length(self, kv: KV) -> int:
        """Slots in the KV (real or padding)."""

    @abstractmethod
    def kv_nbytes(self, kv: KV) -> int:
        """Bytes the KV holds (for cache budgets)."""

    def kv_layers(self, kv: KV) -> tuple[list, list, int]:
        """(keys, values, length): per layer C-contiguous [batch, kv_heads, >= length, head_dim] arrays (numpy or
        torch) behind the KV, not copies, and its slot count. The paged KV store (engine/paged_kv_store.py) copies
        entries into its blocks through these; a runner without them cannot use the paged layout."""
        raise NotImplementedError(f"the {self.name} runner does not expose its KV buffers (no paged KV layout)")

    def kv_empty(self, batch: int, length: int, reserve: int = 0) -> KV:
        """A new KV of `length` slots (zeros) for `batch` rows, `reserve` as in forward: the buffer the paged store
        gathers entries into (its kv_layers are then written in place)."""
        raise NotImplementedError(f"the {self.name} runner does not expose its KV buffers (no paged KV layout)")

    def kv_paged_rows(self, pool: Any, rows: list, keys: list, values: list, index: np.ndarray, tables: np.ndarray,
                      at: np.ndarray, counts: np.ndarray, length: int, device: str) -> KV:
        """Decode rows kept in the paged store's pools (capabilities.paged_decode_rows): `rows` (ops.paged_kv.
        PagedRow) get their own slots from a contiguous batch KV's layers `keys`/`values` (row r: slots
        index[r, :counts[r]], written from slot at[r] of its table); returns the KV the runner decodes them as."""
        raise NotImplementedError(f"the {self.name} runner does not decode rows in block pools")

    def kv_gather_slots(self, kv: KV, index: np.ndarray, reserve: int = 0) -> KV | None:
        """A new KV whose row r holds slots index[r] of kv's row r, in that order (index: int [rows, L]), or None
        where this runner cannot (the caller then keeps kv). The decode batch re-packs its rows' live slots with it
        (keys are stored after their rotary embedding, so a key's slot carries no position)."""
        return None

    def kv_for_decode(self, kv: KV, mask: np.ndarray) -> KV:
        """The KV a decode batch keeps for rows that join it (`mask`: the engine's [rows, slots] mask of `kv`). A
        runner may lay it out its own way (the onnxruntime runner packs each row's live slots, runners/decode_kv.py);
        the engine keeps its own mask and slot count either way. Default: the KV as it is."""
        return kv

    def kv_release(self, kv: KV) -> None:  # noqa: B027 - optional hook, nothing to do for plain buffers
        """The caller is done with `kv` (a decode cohort that emptied): a KV holding pool blocks (runners/
        paged_rows.py) gives them back now instead of at garbage collection. Nothing to do for plain buffers."""

    def set_lone_check(self, check: Callable[[], bool] | None) -> None:  # noqa: B027 - optional hook
        """The engine's answer to "does a call now run alone?" (at most one lane has requests): a runner that keeps
        sessions on more threads for lone calls (onnxruntime's lone_threads) asks it per call. Ignored elsewhere."""

    def embeds_nbytes(self, embeds: Embeds) -> int:
        """Bytes an embedding block holds (for cache budgets)."""
        return int(embeds.nelement() * embeds.element_size()) if hasattr(embeds, "element_size") else int(embeds.nbytes)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory and sessions (optional)."""


def split_by_budget(sizes: Sequence[int], budget: int) -> list[slice]:
    """Consecutive runs of items whose sizes sum to at most `budget` (an item over budget stands alone).

    Runners cut vision calls with it: attention over a call's patches costs the square of their number."""
    groups, start, total = [], 0, 0
    for i, size in enumerate(int(s) for s in sizes):
        if i > start and total + size > budget:
            groups.append(slice(start, i))
            start, total = i, 0
        total += size
    groups.append(slice(start, len(sizes)))
    return groups
