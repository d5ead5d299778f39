"""The paged KV store: KVStore's keys, pins and budget, with entries kept in block pools (ops/paged_kv.py).

Layout. Per layer one K and one V pool [num_blocks, kv_heads, block_size, head_dim] (numpy or torch, the runner's
dtype); an entry's KV is a block table (PagedKV) instead of a runner KV. Blocks are reference-counted here: an
entry computed from a parent entry (a [prefix + A] from its [prefix]) shares the parent's full blocks, gets a
copy of the parent's partly filled last block (copy-on-write: it is about to append into it), and appends only
its own slots. Dropping an entry unreferences its blocks; a block returns to the free list at zero.

Forks. `fork` gathers the entries' blocks into one new contiguous runner KV (zero right-padding, the layout every
runner's forward takes), exactly what KVStore.fork builds with runner.kv_stack. On CPU all of it runs through the
CPU twins; on CUDA the same calls run the kernels.

Decode rows. With a kernel-mode runner (runners/kernel_mode.py), `decode_rows` moves a comparison batch's reasoning
rows into the pools after their prefill: each row shares its [prefix + A] entry's blocks (the cascade kernel reads
them once per group of rows) and gets own blocks for its comparison tokens and what it decodes
(runners/paged_rows.py). An entry with padding holes is not shared: that row's real slots are copied compactly.
Those blocks are the decode batch's, outside the budget (as contiguous decode KVs are). The store's own kernel calls
then run on the runner's kernel device ("emulated" included).

Budget. An entry is charged for every block its table names, shared or not, so the store's byte count is an
upper bound of the pool memory in use: sharing saves memory but never lets the pools outgrow the budget's count.
The pools grow (doubling) when pinned entries need more blocks than the budget holds, as KVStore lets them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from c4u_engine.engine.kv_store import KVEntry, KVStore, PrefixKey
from c4u_engine.errors import BackendUnavailableError, InvalidInputError
from c4u_engine.ops import paged_kv
from c4u_engine.ops.paged_kv import PagedRow

DEFAULT_BLOCK_SIZE = 16


@dataclass
class PagedKV:
    """An entry's KV in the pools: `blocks` hold its `length` slots in order."""

    blocks: list[int]
    length: int


class BlockPool:
    """Per-layer K/V pools, a free list and per-block reference counts."""

    def __init__(self, like: Any, layers: int, block_size: int) -> None:
        self.layers = layers
        self.block_size = block_size
        self._torch = not isinstance(like, np.ndarray)
        self._like = like  # dtype, device and (kv_heads, head_dim) come from the first KV stored
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.refs = np.zeros(0, np.int32)
        self._free: list[int] = []
        # The scheduler thread owns the pool, but a decode batch lost with a failed step may be collected on any
        # thread (runners/paged_rows.py's __del__): the free list and the counts change under this lock.
        self._lock = threading.RLock()
        self._grow(64)

    @property
    def num_blocks(self) -> int:
        return int(self.refs.shape[0])

    @property
    def block_nbytes(self) -> int:
        """Bytes one block takes over all layers, K and V."""
        per = self.block_size * int(self._like.shape[1]) * int(self._like.shape[3])
        itemsize = self._like.element_size() if self._torch else self._like.itemsize
        return 2 * self.layers * per * int(itemsize)

    def alloc(self, n: int) -> list[int]:
        with self._lock:
            if n > len(self._free):
                self._grow(max(self.num_blocks, n - len(self._free)))
            out = [self._free.pop() for _ in range(n)]
            self.refs[out] = 1
            return out

    def incref(self, blocks: list[int]) -> None:
        with self._lock:
            np.add.at(self.refs, blocks, 1)

    def decref(self, blocks: list[int]) -> None:
        with self._lock:
            np.add.at(self.refs, blocks, -1)
            if (self.refs[blocks] < 0).any():
                raise RuntimeError("BlockPool.decref below zero: a block table was released twice")
            self._free.extend(b for b in dict.fromkeys(blocks) if self.refs[b] == 0)

    @property
    def blocks_in_use(self) -> int:
        return int((self.refs > 0).sum())

    def _grow(self, extra: int) -> None:
        old = self.num_blocks
        shape = (old + extra, int(self._like.shape[1]), self.block_size, int(self._like.shape[3]))
        for pools in (self.keys, self.values):
            for layer in range(self.layers):
                pools_new = self._empty(shape)
                if old:
                    pools_new[:old] = pools[layer]
                if layer < len(pools):
                    pools[layer] = pools_new
                else:
                    pools.append(pools_new)
        self.refs = np.concatenate([self.refs, np.zeros(extra, np.int32)])
        self._free.extend(range(old + extra - 1, old - 1, -1))  # lowest ids first out of pop()

    def _empty(self, shape):
        if self._torch:  # a tensor makes its own kind: same dtype and device, no torch import here
            return self._like.new_zeros(shape)
        return np.zeros(shape, self._like.dtype)


class PagedKVStore(KVStore):
    """KVStore whose entries live in block pools; see the module docstring."""

    layout = "paged"

    def __init__(self, capacity_bytes: int, runner, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise InvalidInputError(f"PagedKVStore: block_size must be an int >= 1, got {block_size!r}")
        if not runner.capabilities.paged_kv:
            raise BackendUnavailableError(f"paged KV layout: the {runner.name} runner does not expose its KV buffers "
                                          f"(kv_layers / kv_empty), so its KV cannot live in block pools")
        super().__init__(capacity_bytes, self._charge)
        self.runner = runner
        self.block_size = block_size
        self.pool: BlockPool | None = None
        self._data_device = "cuda" if str(runner.device).startswith("cuda") else "cpu"

    @property
    def device(self) -> str:
        """Where the store's kernels run: the runner's kernel device in kernel mode, else where its data lives."""
        return self.runner.capabilities.kernel_device or self._data_device

    def insert(self, key: PrefixKey, kv: Any, mask: np.ndarray, last_position: int, *, retain: bool = True,
               parent: KVEntry | None = None) -> KVEntry:
        """KVStore.insert, copying `kv` into blocks. `parent`: the entry kv continues (its slots are kv's first
        slots), whose full blocks are shared instead of copied; ignored when its mask does not match."""
        existing = self._entries.get(key.digest())
        if existing is not None and existing.key == key:  # no copy: KVStore.insert returns the entry pinned
            return super().insert(key, existing.kv, mask, last_position, retain=retain)
        paged = self._store_blocks(kv, np.asarray(mask, dtype=bool), parent)
        try:
            return super().insert(key, paged, mask, last_position, retain=retain)
        except BaseException:
            self.pool.decref(paged.blocks)
            raise

    def fork(self, runner, entries, reserve: int = 0) -> tuple[Any, np.ndarray]:
        slots = max(e.slots for e in entries)
        mask = np.zeros((len(entries), slots), dtype=bool)
        for r, e in enumerate(entries):
            mask[r, : e.slots] = e.mask
        out = runner.kv_empty(len(entries), slots, reserve=reserve)
        if self.pool is None:  # only empty entries so far
            return out, mask
        keys, values, _ = runner.kv_layers(out)
        width = max(len(e.kv.blocks) for e in entries)
        tables = np.full((len(entries), max(width, 1)), -1, np.int32)
        for r, e in enumerate(entries):
            tables[r, : len(e.kv.blocks)] = e.kv.blocks
        lens = np.array([e.kv.length for e in entries], np.int32)
        for layer in range(self.pool.layers):
            paged_kv.gather(self.pool.keys[layer], self.pool.values[layer], tables, lens, keys[layer], values[layer],
                            device=self.device)
        return out, mask

    def decode_rows(self, runner, kv: Any, mask: np.ndarray, pasts, lens) -> Any:
        """A continuation batch's rows (kv from prefill_continuations over `pasts`, mask bool [R, slots], lens: new
        tokens per row) as decode rows in the pools (runners/paged_rows.py); kv is no longer needed after."""
        keys, values, _ = runner.kv_layers(kv)
        if self.pool is None:
            self.pool = BlockPool(keys[0], len(keys), self.block_size)
        rows: list = []
        try:
            return self._fill_decode_rows(runner, keys, values, np.asarray(mask, bool), pasts, lens, rows)
        except BaseException:  # no PagedRows owns them yet: give back what the rows built so far hold
            for row in rows:
                self.pool.decref(row.held)
            raise

    def _fill_decode_rows(self, runner, keys, values, mask: np.ndarray, pasts, lens, rows: list) -> Any:
        pool, bs = self.pool, self.block_size
        past_w = mask.shape[1] - max(lens)
        sources = []
        for r, (entry, n) in enumerate(zip(pasts, lens)):
            e = entry.slots
            share = (isinstance(entry.kv, PagedKV) and e > 0 and entry.kv.length == e and bool(entry.mask.all())
                     and bool(mask[r, :e].all()) and not mask[r, e:past_w].any())
            if share:
                held = list(entry.kv.blocks)  # the shared pass reads the partly filled last block too
                pool.incref(held)
                table, shared_len = held[: e // bs], e
                idx = np.arange(past_w, past_w + n)
            else:  # holes in the entry: this row reads its real slots from its own blocks, compact
                held, table, shared_len = [], [], 0
                idx = np.flatnonzero(mask[r, : past_w + n])
            try:
                own = pool.alloc(-(-(shared_len + len(idx)) // bs) - len(table))
            except BaseException:
                pool.decref(held)
                raise
            rows.append(PagedRow(table + own, tuple(entry.kv.blocks) if share else (), shared_len,
                                 shared_len + len(idx), held + own))
            sources.append(idx)
        width = max(len(i) for i in sources)
        index = np.zeros((len(rows), max(width, 1)), np.int64)
        for r, idx in enumerate(sources):
            index[r, : len(idx)] = idx
        tables = np.zeros((len(rows), max(len(row.table) for row in rows)), np.int32)
        for r, row in enumerate(rows):
            tables[r, : len(row.table)] = row.table
        at = np.array([row.shared_len for row in rows], np.int32)
        counts = np.array([len(i) for i in sources], np.int32)
        return runner.kv_paged_rows(pool, rows, keys, values, index, tables, at, counts, mask.shape[1], self.device)

    # -- blocks ------------------------------------------------------------------------------------------
    def _charge(self, kv: PagedKV) -> int:
        return len(kv.blocks) * (self.pool.block_nbytes if self.pool is not None else 0)

    def _store_blocks(self, kv: Any, mask: np.ndarray, parent: KVEntry | None) -> PagedKV:
        keys, values, length = self.runner.kv_layers(kv)
        if length != mask.shape[0]:
            raise InvalidInputError(f"PagedKVStore.insert: the KV has {length} slots, the mask {mask.shape[0]}")
        if length == 0:
            return PagedKV([], 0)
        if self.pool is None:
            self.pool = BlockPool(keys[0], len(keys), self.block_size)
        bs, pool = self.block_size, self.pool
        blocks: list[int] = []
        start = 0
        try:
            if parent is not None and self._shares(parent, mask):
                start = parent.kv.length
                full = start // bs
                shared = list(parent.kv.blocks[:full])
                pool.incref(shared)
                blocks += shared
                if start % bs:  # copy-on-write: this entry appends into the parent's partly filled last block
                    blocks += pool.alloc(1)
                    src = np.array([parent.kv.blocks[full]], np.int32)
                    for layer in range(pool.layers):
                        paged_kv.copy_blocks(pool.keys[layer], pool.values[layer], src,
                                             np.array([blocks[-1]], np.int32), np.array([start % bs], np.int32),
                                             device=self.device)
            blocks += pool.alloc(-(-length // bs) - len(blocks))
            table = np.array([blocks], np.int32)
            for layer in range(pool.layers):
                paged_kv.append(pool.keys[layer], pool.values[layer], table, np.array([start], np.int32),
                                np.array([length - start], np.int32), keys[layer], values[layer],
                                np.array([start], np.int32), device=self.device)
        except BaseException:  # no entry owns them yet: a failed copy gives its blocks back
            if blocks:
                pool.decref(blocks)
            raise
        return PagedKV(blocks, length)

    def _shares(self, parent: KVEntry, mask: np.ndarray) -> bool:
        n = parent.slots
        return (isinstance(parent.kv, PagedKV) and parent.refs > 0 and 0 < n <= mask.shape[0]
                and parent.kv.length == n and bool(np.array_equal(mask[:n], parent.mask)))

    def _drop(self, digest: str) -> None:
        entry = self._entries[digest]
        super()._drop(digest)
        if entry.kv.blocks:
            self.pool.decref(entry.kv.blocks)
