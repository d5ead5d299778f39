"""KV of shared prompt prefixes, kept across calls.

An entry is keyed by everything that produced it: the token ids, the content hashes and grids of the images inside
it, and its start position. Two different images have identical placeholder tokens, so a key of token ids alone
would hand one image's KV to a prompt about another; here the image hashes are part of the key, and on a hit the
stored ids and hashes are compared in full, so a hash collision cannot return the wrong KV either.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from c4u_engine.engine.lru import ByteLRU


@dataclass(frozen=True)
class PrefixKey:
    """What a cached prefix KV was computed from."""

    token_ids: tuple[int, ...]
    image_hashes: tuple[str, ...]
    image_grids: tuple[tuple[int, int, int], ...]
    start: int = 0

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(str(self.start).encode())
        h.update(",".join(map(str, self.token_ids)).encode())
        for digest, grid in zip(self.image_hashes, self.image_grids):
            h.update(digest.encode())
            h.update(str(grid).encode())
        return h.hexdigest()


@dataclass
class PrefixEntry:
    key: PrefixKey
    kv: Any  # runner KV, batch 1, exactly len(key.token_ids) slots
    last_position: int  # M-RoPE position of the last token (text continues at last_position + 1)


class PrefixCache:
    def __init__(self, capacity_bytes: int, kv_nbytes: Callable[[Any], int]) -> None:
        self._lru = ByteLRU(capacity_bytes, lambda e: kv_nbytes(e.kv))

    def get(self, key: PrefixKey) -> PrefixEntry | None:
        entry = self._lru.get(key.digest())
        if entry is None or entry.key != key:  # full check: a digest match alone is not trusted
            return None
        return entry

    def put(self, entry: PrefixEntry) -> None:
        self._lru.put(entry.key.digest(), entry)

    def clear(self) -> None:
        self._lru.clear()

    @property
    def hits(self) -> int:
        return self._lru.hits

    @property
    def misses(self) -> int:
        return self._lru.misses

    @property
    def nbytes(self) -> int:
        return self._lru.nbytes

    def __len__(self) -> int:
        return len(self._lru)


def make_key(token_ids: Sequence[int], images: Sequence[tuple[str, tuple[int, int, int]]], start: int = 0) -> PrefixKey:
    return PrefixKey(
        token_ids=tuple(int(t) for t in token_ids),
        image_hashes=tuple(h for h, _ in images),
        image_grids=tuple(tuple(int(x) for x in g) for _, g in images),
        start=start,
    )
