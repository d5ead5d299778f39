"""Decode attention of the torch runner through the cascade kernel (ops/cascade_attention.py) over a paged view of
its contiguous KV buffers: the integration path the CUDA runner takes, runnable on CPU through the CPU twins
("cpu") or the CUDA kernel source under the SIMT emulator ("emulated", tests only: slow by design).

How a decode step (one new token per row) maps onto the kernel, per layer:
- pool: the buffers [B, kvH, L, D] transposed to [B * L, kvH, 1, D], one slot per block, so a row's block table
  can list exactly the slots its attention mask allows (padding holes anywhere are never attended: the runner
  contract's mask semantics with paged tables);
- groups: consecutive rows whose leading attended slots hold bit-identical K and V (the copies of one [prefix + A]
  entry a comparison round forks) form a group; its common leading slots are the shared part, attended once for
  the group, each row's remaining slots its own part.
On "cuda" the same view is built on the device (a transposed copy of each layer's KV per step: correct, not fast).
This is the kernel mode's path for contiguous KVs; with the paged store, decode reads the store's own pools and
block tables instead (runners/paged_rows.py, runners/kernel_mode.py), with no per-step view.
"""

from __future__ import annotations

import numpy as np

from c4u_engine.errors import InvalidInputError
from c4u_engine.ops import cascade_attention

KERNEL_DEVICES = ("cpu", "emulated", "cuda")
_DTYPES = ("torch.float32", "torch.float16", "torch.bfloat16")


def why_not(device: str, tensor_device: str, dtype, head_dim: int) -> str | None:
    """None when decode attention can run through the kernel on `device` for a model whose KV lives on
    `tensor_device` ("cpu" / "cuda...") in `dtype` with `head_dim`, else the reason (xformers style)."""
    from c4u_engine.ops.dispatch import cpu_why_not, cuda_why_not, emulated_why_not

    if device not in KERNEL_DEVICES:
        return f"kernel attention device must be one of {KERNEL_DEVICES}, got {device!r}"
    reason = {"cpu": cpu_why_not, "emulated": emulated_why_not, "cuda": cuda_why_not}[device]()
    if reason is not None:
        return reason
    on_cuda = str(tensor_device).startswith("cuda")
    if on_cuda != (device == "cuda"):
        memory = "device" if device == "cuda" else "host"
        return f"the {device} kernels take {memory} memory; the KV is on {tensor_device}"
    if str(dtype) not in _DTYPES:
        return f"the kernel takes float32, float16 or bfloat16 KV, not {dtype}"
    if head_dim > cascade_attention.MAX_HEAD_DIM:
        return f"head_dim {head_dim} exceeds the kernel's {cascade_attention.MAX_HEAD_DIM}"
    return None


class CascadeDecodeAttention:
    """Callable (q [B, H, 1, D], keys, values [B, kvH, L, D], mask bool [B, 1, 1, L]) -> [B, H, 1, D]."""

    def __init__(self, device: str, *, check_against_sdpa: bool = False) -> None:
        if device not in KERNEL_DEVICES:
            raise InvalidInputError(f"kernel attention device must be one of {KERNEL_DEVICES}, got {device!r}")
        self.device = device
        # Tests: also run torch SDPA on the same inputs and keep the largest difference seen (max_abs_diff).
        self.check_against_sdpa = check_against_sdpa
        self.max_abs_diff = 0.0
        self.calls = 0
        self.shared_slots = 0  # slots attended once per group instead of once per row, summed over calls

    def __call__(self, q, keys, values, mask):
        import torch

        b, heads, s, d = q.shape
        if s != 1:
            raise InvalidInputError(f"cascade decode attention takes one query token per row, got {s}")
        length = keys.shape[2]
        kv_heads = keys.shape[1]
        # [B, L, kvH, D] viewed as blocks of one slot: block r * L + j holds row r's slot j.
        pool_k = keys.transpose(1, 2).contiguous().view(b * length, kv_heads, 1, d)
        pool_v = values.transpose(1, 2).contiguous().view(b * length, kv_heads, 1, d)
        allowed = mask.reshape(b, length).cpu().numpy()  # metadata is host int32 (the op uploads it for "cuda")
        slots = [np.flatnonzero(allowed[r]) for r in range(b)]
        seq_lens = np.array([len(x) for x in slots], np.int32)
        tables = np.zeros((b, max(int(seq_lens.max(initial=0)), 1)), np.int32)
        for r, x in enumerate(slots):
            tables[r, : len(x)] = x + r * length
        group_rows, shared_lens = self._groups(pool_k, pool_v, slots, length)
        shared_tables = np.zeros((len(shared_lens), max(int(shared_lens.max(initial=0)), 1)), np.int32)
        for g, n in enumerate(shared_lens):
            shared_tables[g, :n] = tables[group_rows[g], :n]
        self.calls += 1
        self.shared_slots += int(sum(int(n) * (group_rows[g + 1] - group_rows[g] - 1)
                                     for g, n in enumerate(shared_lens)))
        out = cascade_attention.decode(q[:, :, 0].contiguous(), pool_k, pool_v, group_rows, shared_tables,
                                       shared_lens, tables, seq_lens, device=self.device)
        out = torch.as_tensor(out).unsqueeze(2)
        if self.check_against_sdpa:
            from c4u_engine.models.language import gqa_attention

            want = gqa_attention(q, keys, values, mask)
            self.max_abs_diff = max(self.max_abs_diff, float((out.float() - want.float()).abs().max()))
        return out

    @staticmethod
    def _groups(pool_k, pool_v, slots, length) -> tuple[np.ndarray, np.ndarray]:
        """Greedy grouping of consecutive rows by a common leading run of identical attended slots."""
        import torch

        def common(a: int, r: int) -> int:
            n = min(len(slots[a]), len(slots[r]))
            if n == 0 or not np.array_equal(slots[a][:n], slots[r][:n]):
                same_slots = np.cumprod(slots[a][:n] == slots[r][:n]) if n else np.zeros(0)
                n = int(same_slots.sum())
            if n == 0:
                return 0
            ia = torch.from_numpy(slots[a][:n] + a * length).to(pool_k.device)
            ir = torch.from_numpy(slots[r][:n] + r * length).to(pool_k.device)
            eq = ((pool_k[ia] == pool_k[ir]) & (pool_v[ia] == pool_v[ir])).flatten(1).all(1).cpu().numpy()
            return int(np.cumprod(eq).sum())

        rows = len(slots)
        group_rows, shared_lens = [0], []
        r = 0
        while r < rows:
            shared, end = len(slots[r]), r + 1
            while end < rows:
                n = common(r, end)
                if n == 0:
                    break
                shared = min(shared, n)
                end += 1
            shared_lens.append(shared)
            group_rows.append(end)
            r = end
        return np.array(group_rows, np.int32), np.array(shared_lens, np.int32)
