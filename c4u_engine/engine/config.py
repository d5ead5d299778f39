"""EngineConfig: every limit and budget of an Engine in one validated value (defaults written once, here)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from c4u_engine.errors import InvalidInputError


KV_LAYOUTS = ("contiguous", "paged")
MAX_LANES = 64
AUTO_MAX_LANES = 4  # each lane gets 1/lanes of the KV budget: more would cut its reuse


@dataclass(frozen=True)
class EngineConfig:
    """Limits and budgets. Sizes in bytes; a cache of 0 bytes keeps nothing beyond the requests that use it.

    max_candidates: images per request (more is LimitExceededError).
    max_image_pixels: decoded pixels per input image (decompression-bomb guard).
    encoder_cache_bytes: image embeddings kept across requests, keyed by image content.
    prefix_cache_bytes: the KV store's budget: [prefix] and [prefix + A] KV kept across requests. Entries a live
        request uses are pinned and never evicted; while pinned entries alone exceed the budget the scheduler
        admits no new request (it degrades to fewer requests at a time instead of failing).
    max_batch_rows: rows (comparisons, prefixes, images A) per prefill call and rows in the decode batch.
    max_batch_tokens: new tokens per prefill call (a row over it runs alone).
    max_step_tokens: new tokens (image tokens included) per scheduler step, over all calls; requests are taken
        oldest first until it is spent. Smaller: older requests finish sooner (on a CPU, batching more does not
        speed up prefill); larger: more rows per call (a GPU wants them).
    max_queued_requests: requests waiting for admission; one more is refused with OverloadedError.
    max_active_requests: requests the scheduler works on at once (the rest wait in the queue, FIFO).
    default_timeout_s: a request's deadline when the call gives none (None: no deadline).
    kv_layout: how the KV store keeps entries: "contiguous" (one runner KV per entry; forks copy them) or "paged"
        (block pools through the paged-KV kernels, engine/paged_kv_store.py: a [prefix + A] entry shares its
        prefix's full blocks). Both give the same results; "paged" needs a runner exposing its KV buffers.
    kv_block_size: slots per block of the paged layout.
    lanes: schedulers working side by side on one loaded model, each with its own thread, KV store (the
        prefix_cache_bytes budget split evenly) and decode batch; a request goes to the least loaded lane. On a
        CPU, two one-thread lanes compute more than one two-thread scheduler once several requests are live, and
        about as fast for a lone request (BENCHMARKS.md, "Lanes"). Needs a runner whose calls may run at the same
        time (onnxruntime; torch and TensorRT serialize theirs). None (default): one lane per available core, at
        most AUTO_MAX_LANES, for onnxruntime on a CPU; one lane otherwise (a GPU wants one scheduler's big batches).
    """

    max_candidates: int = 64
    max_image_pixels: int = 50_000_000
    encoder_cache_bytes: int = 256 << 20
    prefix_cache_bytes: int = 512 << 20
    max_batch_rows: int = 64
    max_batch_tokens: int = 16384
    max_step_tokens: int = 4096
    max_queued_requests: int = 1024
    max_active_requests: int = 64
    default_timeout_s: float | None = None
    kv_layout: str = "contiguous"
    kv_block_size: int = 16
    lanes: int | None = None

    def __post_init__(self) -> None:
        positive = ("max_candidates", "max_image_pixels", "max_batch_rows", "max_batch_tokens", "max_step_tokens",
                    "max_active_requests", "max_queued_requests")
        for name in positive:
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("kv_block_size", self.kv_block_size, minimum=1)
        if self.lanes is not None:
            _check_int("lanes", self.lanes, minimum=1)
            if self.lanes > MAX_LANES:
                raise InvalidInputError(f"EngineConfig.lanes must be at most {MAX_LANES}, got {self.lanes}")
        if self.kv_layout not in KV_LAYOUTS:
            raise InvalidInputError(f"EngineConfig.kv_layout must be one of {KV_LAYOUTS}, got {self.kv_layout!r}")
        for name in ("encoder_cache_bytes", "prefix_cache_bytes"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.default_timeout_s is not None:
            check_seconds("EngineConfig.default_timeout_s", self.default_timeout_s)

    def replace(self, **changes: Any) -> "EngineConfig":
        """A copy with `changes`; an unknown name is an InvalidInputError listing the valid ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InvalidInputError(f"unknown engine settings {unknown}; valid: {sorted(known)}")
        return dataclasses.replace(self, **changes)


def check_seconds(name: str, value: Any) -> float:
    """A duration: a positive, finite number of seconds (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"EngineConfig.{name} must be an int >= {minimum}, got {value!r}")
