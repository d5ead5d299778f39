"""Decode rows whose KV lives in the paged KV store's block pools (engine/paged_kv_store.py), not in a contiguous
runner KV: the KV type a kernel-mode torch runner decodes (runners/kernel_mode.py). Issue 15 item 2.

Row r holds `seq_lens[r]` real slots, compact (no padding holes): its first `shared_lens[r]` are an entry's blocks
(the [prefix + A] the comparison continued; every row forked from that entry reads the same blocks), the rest sit in
the row's own blocks. The row's block table has the entry's full blocks first, then its own blocks from column
shared_len // block_size on (the slots of that first own block before shared_len % block_size are never read:
the shared pass reads positions below shared_len through the entry's table, the row's pass the positions from
shared_len on). A decode step appends each row's new K/V into its own blocks (ops.paged_kv.append) and attends in
cascade (ops.cascade_attention.decode): rows grouped by their entry, the shared part read once per group.

Ownership: a PagedRows holds one reference on every block in its rows' tables (the entry's full blocks included,
so an evicted entry's blocks outlive it while rows read them). kv_select / kv_stack hand rows over; `release`
returns the blocks of the rows still held (the decode batch calls it when a cohort empties; __del__ is the net).
`pool` is the store's BlockPool, read at every step (it may grow, reallocating its tensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from c4u_engine.errors import InvalidInputError
from c4u_engine.ops import paged_kv
from c4u_engine.ops.paged_kv import PagedRow


class PagedRows:
    """A batch of decode rows in block pools; `length` is the slot width of the engine's mask (the contiguous
    layout's width), kept so the runner contract's shape checks hold; each row's real slots are `seq_len`."""

    def __init__(self, pool: Any, rows: list[PagedRow], length: int) -> None:
        self.pool = pool
        self.rows = rows
        self.length = int(length)

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, keep: Sequence[int], length: int | None = None) -> PagedRows:
        """Rows `keep` (each at most once) handed to a new PagedRows; the others' blocks are released."""
        keep = [int(k) for k in keep]
        if len(set(keep)) != len(keep):
            raise InvalidInputError("paged decode rows cannot be repeated (a row owns its blocks); fork instead")
        kept = set(keep)
        for i, row in enumerate(self.rows):
            if i not in kept:
                self._release_row(row)
        out = PagedRows(self.pool, [self.rows[k] for k in keep], self.length if length is None else length)
        self.rows = []
        return out

    @staticmethod
    def stack(parts: Sequence[PagedRows], length: int) -> PagedRows:
        """All rows of `parts`, in order, handed to one PagedRows (no copy: block tables are concatenated)."""
        pools = {id(p.pool) for p in parts}
        if len(pools) != 1:
            raise InvalidInputError("paged decode rows from different block pools cannot be stacked")
        rows = [row for p in parts for row in p.rows]
        out = PagedRows(parts[0].pool, rows, length)
        for p in parts:
            p.rows = []
        return out

    def release(self) -> None:
        for row in self.rows:
            self._release_row(row)
        self.rows = []

    def _release_row(self, row: PagedRow) -> None:
        if row.held:
            self.pool.decref(row.held)
            row.held = []

    def __del__(self) -> None:  # a cohort dropped without release (a failed step): its blocks still go back
        try:
            self.release()
        except Exception:  # noqa: BLE001 - never raise from a finalizer (interpreter shutdown)
            pass

    @property
    def nbytes(self) -> int:
        return sum(len(r.held) for r in self.rows) * int(self.pool.block_nbytes)

    # -- one decode step's metadata ------------------------------------------------------------------------
    def ensure_room(self, extra: int = 1) -> None:
        """Every row has blocks for `extra` more slots (allocated from the pool when a row crosses a block)."""
        bs = self.pool.block_size
        for row in self.rows:
            need = -(-(row.seq_len + extra) // bs) - len(row.table)
            if need > 0:
                new = self.pool.alloc(need)
                row.table += new
                row.held += new

    def step_metadata(self, new: int) -> dict[str, np.ndarray]:
        """Host int32 metadata of a step where every row appends `new` slots and then attends all its slots:
        `order` (rows grouped by entry, stable), group_rows, shared_tables, shared_lens, block_tables (in `order`),
        seq_lens before (`append_at`) and after the step (`seq_lens`), both in row order for the append."""
        keys: dict[Any, int] = {}
        gid = [keys.setdefault((r.shared_blocks, r.shared_len) if r.shared_len else None, len(keys))
               for r in self.rows]
        order = np.argsort(np.array(gid, np.int64), kind="stable")
        counts = np.bincount(np.array(gid, np.int64), minlength=len(keys)) if self.rows else np.zeros(0, np.int64)
        by_group = sorted(keys.items(), key=lambda kv: kv[1])
        shared_lens = np.array([k[1] if k else 0 for k, _ in by_group], np.int32)
        width = max([len(k[0]) for k, _ in by_group if k] + [1])
        shared_tables = np.zeros((len(by_group), width), np.int32)
        for g, (k, _) in enumerate(by_group):
            if k:
                shared_tables[g, : len(k[0])] = k[0]
        tables = np.zeros((len(self.rows), max([len(r.table) for r in self.rows] + [1])), np.int32)
        for i, r in enumerate(self.rows):
            tables[i, : len(r.table)] = r.table
        before = np.array([r.seq_len for r in self.rows], np.int32)
        return {"order": order, "group_rows": np.concatenate([[0], np.cumsum(counts)]).astype(np.int32),
                "shared_tables": shared_tables, "shared_lens": shared_lens, "tables": tables,
                "append_at": before, "seq_lens": before + np.int32(new)}


def fill_rows(pool: Any, rows: list[PagedRow], keys: list, values: list, index: np.ndarray, tables: np.ndarray,
              at: np.ndarray, counts: np.ndarray, length: int, device: str) -> PagedRows:
    """PagedRows over `rows`, their own slots appended from a contiguous batch KV (per layer torch [R, kvH, S, D]):
    row r's slots index[r, :counts[r]] go into its table from slot at[r] on."""
    import torch

    with torch.inference_mode():
        dev = keys[0].device
        row_t = torch.arange(len(rows), device=dev)[:, None]
        index_t = torch.from_numpy(index).to(dev)
        for layer in range(pool.layers):  # [R, width, kvH, D] -> [R, kvH, width, D]: the rows' real slots
            src_k = keys[layer][row_t, :, index_t].permute(0, 2, 1, 3).contiguous()
            src_v = values[layer][row_t, :, index_t].permute(0, 2, 1, 3).contiguous()
            paged_kv.append(pool.keys[layer], pool.values[layer], tables, at, counts, src_k, src_v, device=device)
    return PagedRows(pool, rows, length)
