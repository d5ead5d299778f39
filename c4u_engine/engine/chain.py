"""A request's prompt chain: the cached KV entries its comparisons continue from, defined in one place.

    level 0  SYSTEM   [system turn]                the evaluation protocol, the same for every request; no parent
    level 1  PREFIX   [system turn][profile]       one per request (shared by requests with the same profile)
    level 2  IMAGE_A  [prefix][image A span]       one per distinct image shown as Creative A

A link is what computing one entry needs: its key (token ids, the content hashes and grids of the images inside it,
and a scope: engine/kv_store.py), its parent's key, the new tokens beyond the parent and, at level 2, the candidate
whose embeddings fill the image pads. Where the system turn cannot be cut off the prefix exactly (spans.system_ids
is empty), the prefix has no parent and is computed from scratch. A comparison row then continues an IMAGE_A entry
with image B and the question (spans.layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from c4u_engine.engine.kv_store import PrefixKey, make_key
from c4u_engine.engine.spans import ComparisonSpans, Grid
from c4u_engine.models.rope import text_position_ids

SYSTEM, PREFIX, IMAGE_A = range(3)
LEVELS = ("system", "prefix", "image_a")


@dataclass
class NewTokens:
    ids: np.ndarray  # int64 [n]
    positions: np.ndarray  # int64 [3, n]


def text_tokens(ids: np.ndarray, start: int = 0) -> NewTokens:
    """The text-only tokens ids[start:] at their positions (a text prefix advances one position per token)."""
    return NewTokens(ids[start:], text_position_ids(start, len(ids) - start)[:, 0])


@dataclass(frozen=True, eq=False)
class Link:
    level: int
    key: PrefixKey
    parent: PrefixKey | None  # None: computed from scratch
    new: NewTokens  # the tokens beyond the parent
    image: int | None = None  # IMAGE_A: the candidate whose embeddings fill the image pads

    @property
    def last_position(self) -> int:
        """M-RoPE position of the entry's last token (the text after it continues at last_position + 1)."""
        return int(self.new.positions[:, -1].max())


class PromptChain:
    """The links of one request: its spans (one profile), its candidates' content hashes and grids."""

    def __init__(self, spans: ComparisonSpans, image_hashes: list[str], grids: list[Grid]) -> None:
        self.spans = spans
        self._hashes = image_hashes
        self._grids = grids
        scope, system_ids, prefix_ids = spans.scope, spans.system_ids, spans.prefix_ids
        self.system = (Link(SYSTEM, make_key(system_ids, [], scope), None, text_tokens(system_ids))
                       if len(system_ids) else None)
        self.prefix = Link(PREFIX, make_key(prefix_ids, [], scope), self.system and self.system.key,
                           text_tokens(prefix_ids, len(system_ids)))
        self._image_a: dict[int, Link] = {}

    def image_a(self, candidate: int) -> Link:
        link = self._image_a.get(candidate)
        if link is None:
            grid = self._grids[candidate]
            ids, positions = self.spans.prefix_a(grid)
            n = len(self.spans.prefix_ids)
            key = make_key(ids, [(self._hashes[candidate], grid)], self.spans.scope)
            link = self._image_a[candidate] = Link(IMAGE_A, key, self.prefix.key,
                                                   NewTokens(ids[n:], positions[:, n:]), candidate)
        return link
