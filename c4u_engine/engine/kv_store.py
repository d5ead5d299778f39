"""The KV store: the one owner of cached prompt KV ([prefix] and [prefix + image A] entries).

Keys. An entry is keyed by everything that produced it: token ids, the content hashes and grids of the images inside
it, and a scope (a request's private scope when it runs with use_cache=False). Two different images have identical
placeholder tokens, so a key of token ids alone would hand one image's KV to a prompt about another (vLLM and SGLang
both shipped that bug); here the image hashes are part of the key, and on a hit the stored key is compared in full,
so a digest collision cannot return the wrong KV either.

Lifetime. `acquire` (a hit) and `insert` (a new entry) pin the entry for the caller; `release` unpins. A pinned entry
is never evicted, whatever the budget, so a live request's KV cannot vanish under it. The byte budget evicts unpinned
entries, least recently used first; while pinned bytes alone exceed it, a lane admits no new request (worker.py's
admission compares pinned_bytes with the capacity). An entry inserted with retain=False (a private one) is dropped at
its last release.

Operations (the interface the CUDA paged-KV kernels implement): insert (allocate), fork (entries -> one batch of
comparison rows), append (the runner's forward appends to a forked batch in place: a KV handed over as `past`),
release. On CPU `fork` copies (runner.kv_stack); on CUDA it is a block table pointing at the entries' blocks.
Entries may hold padding slots (a [prefix + A] computed in a batch with longer prefixes), so each carries its mask.
The store is used from the scheduler thread only (its counters are read from others).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class PrefixKey:
    """What a cached KV was computed from."""

    token_ids: tuple[int, ...]
    image_hashes: tuple[str, ...]
    image_grids: tuple[tuple[int, int, int], ...]
    scope: str = ""  # "" = shared across requests; a request id = private to that request

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.scope.encode())
        h.update(b"|")
        h.update(",".join(map(str, self.token_ids)).encode())
        for digest, grid in zip(self.image_hashes, self.image_grids):
            h.update(digest.encode())
            h.update(str(grid).encode())
        return h.hexdigest()


def make_key(token_ids: Sequence[int], images: Sequence[tuple[str, tuple[int, int, int]]],
             scope: str = "") -> PrefixKey:
    return PrefixKey(
        token_ids=tuple(int(t) for t in token_ids),
        image_hashes=tuple(h for h, _ in images),
        image_grids=tuple(tuple(int(x) for x in g) for _, g in images),
        scope=scope,
    )


@dataclass(eq=False)
class KVEntry:
    key: PrefixKey
    kv: Any  # runner KV, batch 1
    mask: np.ndarray  # bool [slots]: which slots of kv are real (False = padding inside the entry)
    last_position: int  # M-RoPE position of the last token (text continues at last_position + 1)
    nbytes: int
    retain: bool = True
    refs: int = 0

    @property
    def slots(self) -> int:
        return int(self.mask.shape[0])


class KVStore:
    layout = "contiguous"  # EngineConfig.kv_layout (the paged store says "paged")

    def __init__(self, capacity_bytes: int, kv_nbytes: Callable[[Any], int]) -> None:
        if capacity_bytes < 0:
            raise ValueError("capacity_bytes must be >= 0")
        self.capacity = int(capacity_bytes)
        self._kv_nbytes = kv_nbytes
        self._entries: dict[str, KVEntry] = {}
        self._unpinned: OrderedDict[str, None] = OrderedDict()  # LRU order of unpinned entries
        self.nbytes = 0
        self.pinned_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.bytes_per_slot = 0  # learned from the entries stored (admission estimates need it)

    # -- lookup and pinning ------------------------------------------------------------------------------
    def acquire(self, key: PrefixKey) -> KVEntry | None:
        """The entry for `key`, pinned for the caller (release it later), or None."""
        digest = key.digest()
        entry = self._entries.get(digest)
        if entry is None or entry.key != key:  # full check: a digest match alone is not trusted
            self.misses += 1
            return None
        self.hits += 1
        self._pin(digest, entry)
        return entry

    def insert(self, key: PrefixKey, kv: Any, mask: np.ndarray, last_position: int, *, retain: bool = True,
               parent: KVEntry | None = None) -> KVEntry:
        """Store a new entry, pinned once for the caller. An entry already under `key` is returned (pinned) instead:
        two requests that computed the same KV in one batch keep one copy. `parent`: the entry kv continues (the
        paged store, engine/paged_kv_store.py, shares its blocks; here every entry is its own copy)."""
        digest = key.digest()
        old = self._entries.get(digest)
        if old is not None and old.key == key:
            self._pin(digest, old)
            return old
        if old is not None:  # a digest collision with another key: the newer one wins the slot once unpinned
            if old.refs:
                retain = False  # cannot displace a pinned entry: keep the new one private to its user
                digest = digest + "#" + str(id(kv))
            else:
                self._drop(digest)
        entry = KVEntry(key, kv, np.asarray(mask, dtype=bool), int(last_position), int(self._kv_nbytes(kv)), retain)
        self._entries[digest] = entry
        self.nbytes += entry.nbytes
        if entry.slots:
            self.bytes_per_slot = max(self.bytes_per_slot, -(-entry.nbytes // entry.slots))
        self._pin(digest, entry)
        self._evict()  # room for the new entry comes from unpinned ones, least recently used first
        return entry

    def pin(self, entry: KVEntry) -> KVEntry:
        """One more pin on an entry the caller holds (another user of the same KV)."""
        self._pin(self._digest_of(entry) or entry.key.digest(), entry)
        return entry

    def release(self, entry: KVEntry) -> None:
        """Unpin once. An unpinned entry becomes evictable (or is dropped at once when it is not retained)."""
        if entry.refs <= 0:
            raise RuntimeError("KVStore.release of an entry that is not pinned")
        entry.refs -= 1
        if entry.refs:
            return
        self.pinned_bytes -= entry.nbytes
        digest = self._digest_of(entry)
        if digest is None:
            return
        if entry.retain:
            self._unpinned[digest] = None
        else:
            self._drop(digest)
        self._evict()

    # -- batches -----------------------------------------------------------------------------------------
    def fork(self, runner, entries: Sequence[KVEntry], reserve: int = 0) -> tuple[Any, np.ndarray]:
        """One batch KV whose row r starts as entries[r] (a copy on CPU), and its mask bool [rows, slots]."""
        slots = max(e.slots for e in entries)
        mask = np.zeros((len(entries), slots), dtype=bool)
        for r, e in enumerate(entries):
            mask[r, : e.slots] = e.mask
        return runner.kv_stack([e.kv for e in entries], slots, reserve=reserve), mask

    # -- accounting --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every unpinned entry."""
        for digest in list(self._unpinned):
            self._drop(digest)

    def _pin(self, digest: str, entry: KVEntry) -> None:
        if entry.refs == 0:
            self.pinned_bytes += entry.nbytes
            self._unpinned.pop(digest, None)
        entry.refs += 1

    def _digest_of(self, entry: KVEntry) -> str | None:
        digest = entry.key.digest()
        if self._entries.get(digest) is entry:
            return digest
        for d, e in self._entries.items():  # a collision-displaced private entry (never in practice)
            if e is entry:
                return d
        return None

    def _drop(self, digest: str) -> None:
        entry = self._entries.pop(digest)
        self._unpinned.pop(digest, None)
        self.nbytes -= entry.nbytes

    def _evict(self) -> None:
        while self.nbytes > self.capacity and self._unpinned:
            digest = next(iter(self._unpinned))
            self._drop(digest)
            self.evictions += 1
