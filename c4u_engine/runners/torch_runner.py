"""The reference runtime: c4u_engine.models' PyTorch Qwen2.5-VL, on CPU or CUDA."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from c4u_engine.errors import BackendUnavailableError, InvalidInputError
from c4u_engine.runners.base import KV, Embeds, Runner, split_by_budget
from c4u_engine.runners.paged_rows import PagedRows, fill_rows

try:
    import torch
except ImportError:  # the runtime path without torch uses onnxruntime; this runner says why it cannot run
    torch = None


class TorchKV:
    """Per-layer K and V buffers [batch, kv_heads, capacity, head_dim], of which the first `length` slots are filled.

    Spare capacity lets decoding append in place; see Runner.forward for the aliasing rule that makes it safe."""

    __slots__ = ("keys", "values", "length")

    def __init__(self, keys: list, values: list, length: int) -> None:
        self.keys = keys
        self.values = values
        self.length = length

    @property
    def capacity(self) -> int:
        return int(self.keys[0].shape[2])


class TorchRunner(Runner):
    name = "torch"
    takes_device_pixels = True

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", dtype: str | None = None) -> None:
        if torch is None:
            raise BackendUnavailableError(
                "the torch runtime needs torch: pip install torch==2.13.0 (CPU) or a CUDA build")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} asked for, but torch sees no CUDA device")
        if device != "cpu" and not device.startswith("cuda"):
            raise InvalidInputError(f"unknown device {device!r}; valid: 'cpu', 'cuda', 'cuda:N'")
        from c4u_engine.models.checkpoint import load_model

        torch_dtype = _parse_dtype(dtype)
        self.model = load_model(model_dir, device=device, dtype=torch_dtype)
        self._bind(self.model, torch.device(device))

    def _bind(self, model, torch_device) -> None:
        """What every torch runner holds besides its weights' origin (train/engine_bridge.py's in-memory runner
        calls this instead of loading from disk)."""
        self.model = model
        self.device = str(torch_device)
        self.dtype = next(model.parameters()).dtype
        self._set_model_facts(model.config)
        self._torch_device = torch_device
        # torch modules are not re-entrant across threads on the same weights under inference_mode only by
        # convention; the engine serializes calls, this lock guards direct users of the runner.
        self._lock = threading.Lock()
        self.kernels = None  # a KernelMode once use_kernels(...) chose a kernel device (runners/kernel_mode.py)
        # None: decode steps attend with gqa_attention; else the cascade kernel (runners/kernel_attention.py). The
        # runner's, not the model's: two runners over one in-memory model may attend differently.
        self.decode_attention = None

    def use_kernels(self, device: str | None, *, strict: bool = True) -> str | None:
        """Kernel dispatch mode (runners/kernel_mode.py): embedding merge, M-RoPE positions, sampling and decode
        (paged rows in the paged store's pools, or cascade attention over a view of contiguous KVs) through the
        kernels on `device`: "cuda" (a CUDA runner with the CUDA build), "cpu" (CPU twins) or "emulated" (SIMT
        emulator, tests only) on a CPU runner. None: today's torch / numpy path (the default). Where the kernels
        cannot run (no CUDA build, dtype, head_dim) it raises BackendUnavailableError with the reason, or with
        strict=False keeps today's path and returns the reason. Returns None when the kernels are in use."""
        reason = self.use_kernel_attention(device, strict=strict)
        if device is None or reason is not None:
            self.kernels = None
            return reason
        from c4u_engine.runners.kernel_mode import KernelMode

        self.kernels = KernelMode(device)
        return None

    def use_kernel_attention(self, device: str | None, *, check_against_sdpa: bool = False,
                             strict: bool = True) -> str | None:
        """Decode steps attend through the cascade kernel over a paged view of the KV (runners/kernel_attention.py)
        on `device`: "cuda" (a CUDA runner with the CUDA build), or, on a CPU runner, "cpu" (CPU twin) or
        "emulated" (the CUDA source under the SIMT emulator: tests only). None: torch SDPA again (the default).
        Where the kernel cannot run (no CUDA build, dtype, head_dim > 128) it raises BackendUnavailableError with
        the reason, or with strict=False keeps SDPA and returns the reason. Returns None when the kernel is in use."""
        if device is None:
            self.decode_attention = None
            return None
        from c4u_engine.runners.kernel_attention import CascadeDecodeAttention, why_not

        reason = why_not(device, self.device, self.dtype, self.head_dim)
        if reason is not None:
            if strict:
                raise BackendUnavailableError(f"kernel attention on {device!r}: {reason}")
            self.decode_attention = None
            return reason
        self.decode_attention = CascadeDecodeAttention(device, check_against_sdpa=check_against_sdpa)
        return None

    # -- vision ----------------------------------------------------------------------------------------
    # the reference vision tower attends over all patches of a call with dense masks: cost grows with the square of
    # the patches per call, so calls are cut to about this many patches (whole images; measured best on CPU)
    vision_patches_per_call = 256  # dense attention is quadratic in it; measured best at 112 and 224 px (2 cores)

    def encode_images(self, pixel_values: np.ndarray, grid_thw: np.ndarray) -> list[Embeds]:
        grid = np.asarray(grid_thw, dtype=np.int64)
        merge = self.model.config.vision.spatial_merge_size
        patches = [int(t * h * w) for t, h, w in grid]
        outs: list = []
        offsets = np.concatenate([[0], np.cumsum(patches)])
        with self._lock, torch.inference_mode():
            if isinstance(pixel_values, torch.Tensor):  # preprocessed on the device (engine/pixels.py)
                pv = pixel_values
            else:
                pv = torch.from_numpy(np.ascontiguousarray(pixel_values, dtype=np.float32))
            for group in split_by_budget(patches, self.vision_patches_per_call):
                chunk = pv[offsets[group.start] : offsets[group.stop]].to(self._torch_device, self.dtype)
                out = self.model.encode_images(chunk, grid[group])
                outs += list(torch.split(out, [p // (merge * merge) for p in patches[group]], dim=0))
        return outs

    def embed(self, input_ids: np.ndarray, image_embeds: Sequence[Embeds]) -> Embeds:
        with self._lock, torch.inference_mode():
            if self.kernels is not None:
                return self.kernels.embed(self.model.language.embed_tokens.weight, input_ids, image_embeds,
                                          self.image_token_id)
            ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self._torch_device)
            embeds = self.model.language.embed(ids)
            if len(image_embeds):
                flat = torch.cat(list(image_embeds), dim=0).to(embeds.dtype)
                mask = ids == self.image_token_id
                n = int(mask.sum())
                if n != flat.shape[0]:
                    raise InvalidInputError(f"{n} image-pad tokens but {flat.shape[0]} image embeddings")
                embeds = embeds.masked_scatter(mask.unsqueeze(-1), flat)
            return embeds

    # -- decoder ---------------------------------------------------------------------------------------
    def _forward(self, embeds, position_ids, past, attention_mask, logits_index, reserve: int = 0):
        with self._lock, torch.inference_mode():
            dev = self._torch_device
            pos = torch.from_numpy(np.ascontiguousarray(position_ids, dtype=np.int64)).to(dev)
            mask = torch.from_numpy(np.ascontiguousarray(attention_mask, dtype=bool)).to(dev)
            index = torch.from_numpy(np.ascontiguousarray(logits_index, dtype=np.int64)).to(dev)
            b, s = embeds.shape[0], embeds.shape[1]
            if isinstance(past, PagedRows):
                return self._forward_paged(embeds, pos, past, attention_mask, index), past
            p = 0 if past is None else past.length
            if past is None or past.capacity < p + s:
                kv = self._alloc(b, p + s + reserve)
                if past is not None:
                    for dst, src in zip(kv.keys + kv.values, past.keys + past.values):
                        dst[:, :, :p] = src[:, :, :p]
            else:
                kv = past  # append in place: the caller hands `past` over (Runner.forward's aliasing rule)
            logits = self.model.language.forward_into(embeds, pos, kv.keys, kv.values, p, mask, index,
                                                      self.decode_attention)
            return logits.float().cpu().numpy(), TorchKV(kv.keys, kv.values, p + s)

    def _forward_paged(self, embeds, pos, rows: PagedRows, attention_mask, index):
        """A decode step of rows kept in the paged store's pools (runners/paged_rows.py), appended in place."""
        if self.kernels is None:
            raise InvalidInputError("paged decode rows need the kernel mode (TorchRunner.use_kernels)")
        if embeds.shape[1] != 1:
            raise InvalidInputError(f"paged decode rows take one new token per row, got {embeds.shape[1]}")
        real = np.asarray(attention_mask, bool).sum(axis=1)
        want = np.array([r.seq_len + 1 for r in rows.rows])
        if not np.array_equal(real, want):  # the mask's real slots must be the rows' compact slots + the new one
            raise InvalidInputError(f"attention_mask counts {real.tolist()} real slots, the paged rows hold "
                                    f"{want.tolist()} (with the new token)")
        return self.kernels.decode_paged(self.model.language, embeds, pos, rows, index).float().cpu().numpy()

    # -- KV plumbing -----------------------------------------------------------------------------------
    def kv_paged_rows(self, pool, rows, keys, values, index, tables, at, counts, length, device):
        return fill_rows(pool, rows, keys, values, index, tables, at, counts, length, device)

    def _alloc(self, batch: int, capacity: int) -> TorchKV:
        shape = (batch, self.num_kv_heads, capacity, self.head_dim)
        new = lambda: torch.zeros(shape, dtype=self.dtype, device=self._torch_device)  # noqa: E731
        return TorchKV([new() for _ in range(self.num_layers)], [new() for _ in range(self.num_layers)], 0)

    def kv_select(self, kv: KV, rows: Sequence[int], length: int | None = None, reserve: int = 0) -> KV:
        if isinstance(kv, PagedRows):  # rows handed over, no copy; blocks are allocated as rows grow
            return kv.select(rows, length)
        length = kv.length if length is None else length
        with torch.inference_mode():
            idx = torch.as_tensor(list(rows), dtype=torch.long, device=self._torch_device)
            if reserve == 0:
                pick = lambda t: t[:, :, :length].index_select(0, idx)  # noqa: E731
                return TorchKV([pick(k) for k in kv.keys], [pick(v) for v in kv.values], length)
            out = self._alloc(len(rows), length + reserve)
            for dst, src in zip(out.keys + out.values, kv.keys + kv.values):
                dst[:, :, :length] = src[:, :, :length].index_select(0, idx)
            out.length = length
            return out

    def kv_stack(self, kvs: Sequence[KV], length: int, reserve: int = 0) -> KV:
        paged = [isinstance(kv, PagedRows) for kv in kvs]
        if any(paged):
            if not all(paged):
                raise InvalidInputError("kv_stack: paged decode rows cannot be stacked with contiguous KVs")
            return PagedRows.stack(kvs, length)
        with torch.inference_mode():
            if max(kv.length for kv in kvs) > length:
                raise InvalidInputError(f"kv_stack: a KV of {max(kv.length for kv in kvs)} slots does not fit {length}")
            out = self._alloc(sum(kv.keys[0].shape[0] for kv in kvs), length + reserve)
            row = 0
            for kv in kvs:
                n, b = kv.length, kv.keys[0].shape[0]
                for dst, src in zip(out.keys + out.values, kv.keys + kv.values):
                    dst[row : row + b, :, :n] = src[:, :, :n]
                row += b
            out.length = length
            return out

    def kv_gather_slots(self, kv: KV, index: np.ndarray, reserve: int = 0) -> KV | None:
        if isinstance(kv, PagedRows):  # rows in block pools already hold only their own slots
            return None
        rows, length = index.shape
        with torch.inference_mode():
            at = torch.as_tensor(index, dtype=torch.long, device=self._torch_device)
            at = at[:, None, :, None].expand(rows, self.num_kv_heads, length, self.head_dim)
            out = self._alloc(rows, length + reserve)
            for dst, src in zip(out.keys + out.values, kv.keys + kv.values):
                dst[:, :, :length] = torch.gather(src, 2, at)
            out.length = length
            return out

    def kv_length(self, kv: KV) -> int:
        return int(kv.length)

    def kv_layers(self, kv: KV) -> tuple[list, list, int]:
        if not all(t.is_contiguous() for t in (*kv.keys, *kv.values)):  # a batch cut of a wider buffer
            return [k.contiguous() for k in kv.keys], [v.contiguous() for v in kv.values], int(kv.length)
        return list(kv.keys), list(kv.values), int(kv.length)

    def kv_empty(self, batch: int, length: int, reserve: int = 0) -> KV:
        with torch.inference_mode():
            out = self._alloc(batch, length + reserve)
        out.length = length
        return out

    def kv_release(self, kv: KV) -> None:
        if isinstance(kv, PagedRows):
            kv.release()

    def kv_nbytes(self, kv: KV) -> int:
        if isinstance(kv, PagedRows):
            return kv.nbytes
        return sum(t.nelement() * t.element_size() for t in (*kv.keys, *kv.values))


def _parse_dtype(dtype):
    if dtype is None:
        return None
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in names:
        raise InvalidInputError(f"unknown dtype {dtype!r}; valid: {', '.join(names)}")
    return names[dtype]
