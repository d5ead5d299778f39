"""The plain values one scheduler step passes along: what schedule() decided, what run() produced.

    batch   = schedule()                 StepBatch: images to encode, chain entries to compute per level (and who
                                         takes each), entries found in the store, rounds that start, this step's
                                         comparison rows per judge mode, whether the decode batch steps
    outputs = run(batch)                 StepOutputs: embeddings, computed entries, comparisons, decode results,
                                         per-request failures, counters; no request state changes
    postprocess(batch, outputs)          entries handed to their requests, answers recorded, plans advanced,
                                         requests finished or failed
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from c4u_engine.comparison import Comparison
from c4u_engine.engine.chain import Link
from c4u_engine.engine.decode_batch import DecodeRow
from c4u_engine.engine.kv_store import KVEntry, PrefixKey
from c4u_engine.engine.request import Pair, Request

# Who takes an entry: (request, slot), slot PREFIX_SLOT for its [prefix], a candidate id for its [prefix + A].
PREFIX_SLOT = -1
Holder = tuple[Request, int]


@dataclass
class LinkWork:
    """One chain entry to compute this step. `holders` take it (none for a system turn: it is only a parent);
    `requests` are those it is computed for (the first is charged its tokens; a failure is attributed to them)."""

    link: Link
    holders: list[Holder]
    requests: list[Request]


@dataclass
class Row:
    """One comparison row: request, index in its round, the ordered pair (candidate ids)."""

    request: Request
    index: int
    pair: Pair


@dataclass
class StepBatch:
    requests: list[Request]  # scheduled this step, oldest first
    encode: list[tuple[Request, int]]  # (request, image index) to embed
    hits: list[tuple[Holder, KVEntry]]  # found in the store, pinned once for their holder
    parents: list[tuple[Request, KVEntry]]  # found in the store as parents only (system turns), pinned for the step
    links: list[list[LinkWork]]  # per chain level (0, 1, 2): entries to compute, in order
    starts: list[tuple[Request, list[Pair], str]]  # requests whose first round starts this step
    rows: dict[str, list[Row]]  # per judge mode: this step's one call of comparison rows
    decode_rows: int  # rows in the decode batch before this step's comparisons join it
    failures: dict[Request, BaseException] = field(default_factory=dict)  # plans that could not say their round


@dataclass
class StepOutputs:
    # (request id, image index) -> (embeddings, from the encoder cache)
    embeds: dict[tuple[int, int], tuple[Any, bool]] = field(default_factory=dict)
    entries: dict[PrefixKey, KVEntry] = field(default_factory=dict)  # computed this step
    pins: list[KVEntry] = field(default_factory=list)  # pins run() holds (released after the holders took theirs)
    comparisons: dict[tuple[int, int], Comparison] = field(default_factory=dict)  # (request id, row) -> fast result
    prefilled: list[Row] = field(default_factory=list)  # comparison rows whose call succeeded
    joined: list[Row] = field(default_factory=list)  # reasoning rows that joined the decode batch
    finished: list[DecodeRow] = field(default_factory=list)  # decode rows that finished
    decoded: Counter = field(default_factory=Counter)  # request -> its rows in this step's decode pass
    failures: dict[Request, BaseException] = field(default_factory=dict)
    seconds: list[tuple[str, float, list[Request]]] = field(default_factory=list)  # (stage, seconds, charged to)
    counts: list[tuple[Request, str, int]] = field(default_factory=list)

    def count(self, request: Request, name: str, n: int = 1) -> None:
        self.counts.append((request, name, int(n)))
