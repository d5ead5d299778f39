"""The torch runner's kernel dispatch mode (TorchRunner.use_kernels): the engine's per-token work goes through the
native kernels (ops/) instead of torch / numpy, on one kernel device:
    "cuda"      the CUDA kernels on a CUDA runner (the GPU path of issue 15 item 2),
    "cpu"       the CPU twins on a CPU runner,
    "emulated"  the CUDA kernel sources under the SIMT emulator on a CPU runner (tests only: it proves the
                integration, not the speed).
What goes through the kernels: the embedding merge (ops/embed_merge), M-RoPE positions (ops/mrope, through
ModelSession.position_ids), sampling (ops/sampling, through engine/sampling.py's Sampler.sample_with), and decode:
with the paged KV store, reasoning rows decode in the store's block pools (runners/paged_rows.py: paged append +
cascade attention, the shared [prefix + A] blocks read once per group); with the contiguous store, decode attention
runs the cascade kernel over a paged view of the contiguous buffers (runners/kernel_attention.py). Prefill attention
stays torch SDPA over the KV the store gathers (ops/paged_kv.gather on the paged store).
`calls` counts kernel launches per op (tests assert the kernels actually ran).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from c4u_engine.runners.paged_rows import PagedRows


class KernelMode:
    def __init__(self, device: str) -> None:
        self.device = device
        self.calls: Counter[str] = Counter()

    # -- embedding merge and positions -------------------------------------------------------------------
    def embed(self, table, input_ids: np.ndarray, image_embeds: Sequence, image_token_id: int):
        """[B, S, hidden] as TorchRunner.embed, through ops.embed_merge (table: the runner's embed_tokens)."""
        from c4u_engine.ops.embed_merge import embed_merge

        blocks = [e.to(table.dtype).contiguous() for e in image_embeds]
        self.calls["embed_merge"] += 1
        return embed_merge(table.detach(), np.asarray(input_ids), blocks, image_token_id, device=self.device)

    def positions(self, input_ids: np.ndarray, grids: np.ndarray, image_token_id: int, merge: int) -> np.ndarray:
        """position_ids int64 [3, B, S] (host numpy, what forward takes) through ops.mrope."""
        from c4u_engine.ops.mrope import mrope_position_ids

        self.calls["mrope"] += 1
        out, _ = mrope_position_ids(input_ids, grids, image_token_id, merge, device=self.device)
        return out.cpu().numpy() if hasattr(out, "cpu") else out

    # -- decode in block pools -------------------------------------------------------------------------------
    def decode_paged(self, language, embeds, position_ids, rows: PagedRows, logits_index):
        """One decode step (one new token per row) of `rows`: logits; rows' seq_lens and length grow by one."""
        import torch

        from c4u_engine.ops import cascade_attention, paged_kv
        from c4u_engine.ops.device_metadata import reuse_uploads

        rows.ensure_room(1)
        meta = rows.step_metadata(1)
        pool, device = rows.pool, self.device
        b = len(rows)
        order = meta["order"]
        grouped = not np.array_equal(order, np.arange(b))
        order_t = torch.from_numpy(order).to(embeds.device)
        inverse_t = torch.from_numpy(np.argsort(order)).to(embeds.device)
        tables, ones = meta["tables"], np.ones(b, np.int32)
        own_tables = np.ascontiguousarray(tables[order])
        seq_lens = np.ascontiguousarray(meta["seq_lens"][order])

        def attend(layer: int, q, k, v):
            pk, pv = pool.keys[layer], pool.values[layer]
            paged_kv.append(pk, pv, tables, meta["append_at"], ones, k.contiguous(), v.contiguous(), device=device)
            qq = q[:, :, 0]
            qq = (qq.index_select(0, order_t) if grouped else qq).contiguous()
            out = cascade_attention.decode(qq, pk, pv, meta["group_rows"], meta["shared_tables"],
                                           meta["shared_lens"], own_tables, seq_lens, device=device)
            out = torch.as_tensor(out)
            return (out.index_select(0, inverse_t) if grouped else out).unsqueeze(2)

        with reuse_uploads():  # every layer's kernels read the same tables: one upload each per step
            logits = language.forward_with(embeds, position_ids, attend, logits_index)
        self.calls["paged_append"] += len(language.layers)
        self.calls["cascade_attention"] += len(language.layers)
        self.calls["shared_slots"] += int(sum(int(n) * (int(hi - lo) - 1) for n, lo, hi in
                                              zip(meta["shared_lens"], meta["group_rows"][:-1],
                                                  meta["group_rows"][1:]) if hi > lo))
        for row in rows.rows:
            row.seq_len += 1
        rows.length += 1
        return logits
