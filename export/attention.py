"""An export-friendly attention for tracing the reference model: the same math as its SDPA calls, a cheaper graph.

The legacy exporter decomposes F.scaled_dot_product_attention into an explicit Transpose of K, scaled after the
transpose (q and K^T each times sqrt(scale)): two full passes over the KV cache per layer before the MatMul, which
were most of a decode step on onnxruntime's CPU EP. While a graph is traced, the reference model's SDPA calls
(language model and vision tower) become grouped_sdpa instead:
scores = (q * scale) @ K^T with the transpose feeding the MatMul directly, which onnxruntime fuses into one
FusedMatMul(transB) and TensorRT into its GEMM / attention kernels, then masked softmax and @ V.

KV segments (language.segment_attention: a decode step's frozen cache, then its short past + new tokens) become
grouped_sdpa_segments: scores per segment joined along the key axis (small: one query row per decode step), one
softmax, then each segment's probabilities times its values, summed. The frozen segment is read in place, never
concatenated into a new cache (a Concat copying every row's KV was 42% of a decode step on onnxruntime's CPU EP,
built-in model, 64 rows x 300 slots).

Batch invariance (batch_invariant=True; the default for int8 / int4 engines): a softmax's row sum is the one
reduction in these graphs whose rounding depends on where a row's keys sit: onnxruntime's CPU kernels sum in SIMD
lanes, so the same scores at another offset (a batch padded to a longer request) differ in the last bit; an int8
engine's next quantization now and then turns that bit into a whole int8 step, and a request's P(A) moved by up to
2e-3 with what shared its batch. Invariant form: e = exp(scores - rowmax) (elementwise: position-free), the row sum
accumulated in float64 and rounded once to float32 (correctly rounded whatever the order, except within ~1e-16 of a
tie), out = (e V) / sum, the division after the product so it runs on [rows, head_dim] instead of [rows, slots].
What it needs from the runtime: a row's slots at the same offsets within each segment, alone and batched, and the
same split into segments: each segment's e V is its own float32 product, and onnxruntime's CPU MatMul rounds a sum
differently when zeros (padding) sit among its terms or the cache is split elsewhere (zeros after the terms change
nothing). Prefill lays every row out from slot 0 with padding at the end; decode batches keep each row's cache packed
from slot 0 with the step's token as its own segment (runners/decode_kv.py). Measured alone vs batched bit for bit
equal, fast mode and reasoning of 256 tokens, int8 (BENCHMARKS.md, "Batch-invariant attention"); before the packed
decode KV a long generation moved P(A) by 7.5e-2, and float64 products alone only narrowed that to 7e-5 (long sums
with cancellation still round differently in the last bit now and then).
The float64 sums cost a few percent of a selection on CPU; TensorRT has no float64, so float exports keep the fused
softmax unless asked.

The mask becomes an additive bias (0 where attended, -inf elsewhere) computed once per mask and shared by every
layer that gets the same mask tensor, instead of a masked_fill (ONNX Where) per layer: onnxruntime's CPU Where with
broadcasting took 5.3 ms against Add's 0.9 ms on a comparison batch's scores ([56, 2, 2, 38, 129]), and Where was
15% of an int8 decoder call. Exact: x + 0 = x and x + -inf = -inf, as masked_fill gives.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterator
from unittest import mock

import torch
import torch.nn.functional as F

from c4u_engine.models import language, layers, vision

_MODEL_MODULES = (language, layers, vision)  # where the reference model calls F.scaled_dot_product_attention


def additive_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where mask is True, -inf where False, in `dtype` (made in float32 and cast: ONNX's ConstantOfShape has no
    bfloat16 before opset 20)."""
    return torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, float("-inf")).to(dtype)


def grouped_bias(attn_mask: torch.Tensor, dtype: torch.dtype, bias_of) -> torch.Tensor:
    """The mask's additive bias as [B|1, 1, 1, S, L], broadcast over the KV heads and query groups of scores
    [B, kvH, G, S, L]. bias_of gets the mask object itself, so one bias is shared by every layer."""
    bias = bias_of(attn_mask, dtype)
    while bias.dim() < 4:
        bias = bias.unsqueeze(0)
    return bias.unsqueeze(2)


def unnormalized_softmax(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(exp(scores - rowmax), the row sums of that accumulated in float64, in scores' dtype): softmax = e / sum,
    with a sum that does not depend on where the row's entries sit (module docstring: batch invariance)."""
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return e, e.double().sum(dim=-1, keepdim=True).to(scores.dtype)


def grouped_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attn_mask: torch.Tensor | None = None, bias_of=additive_bias,
                 batch_invariant: bool = False) -> torch.Tensor:
    """softmax(q K^T / sqrt(D), masked) V for q [B, H, S, D] and K, V [B, kvH, L, D] with kvH dividing H
    (query head h uses KV head h // (H / kvH), as repeat_kv pairs them).

    attn_mask: bool, True = may attend, broadcastable to [B, 1, S, L] (as F.scaled_dot_product_attention takes it).
    Rows must keep at least one True (the reference model's masks always let a token see itself).
    bias_of(mask, dtype): the additive bias of a mask (export_friendly_attention shares one per mask tensor).
    batch_invariant: row sums in float64, normalized after the product with V (module docstring).
    """
    b, heads, s, d = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scale = 1.0 / math.sqrt(int(d))
    q = (query * scale).reshape(b, kv_heads, groups * s, d)
    scores = torch.matmul(q, key.transpose(-1, -2)).reshape(b, kv_heads, groups, s, length)
    if attn_mask is not None:
        scores = scores + grouped_bias(attn_mask, scores.dtype, bias_of)
    if batch_invariant:
        e, total = unnormalized_softmax(scores)
        out = torch.matmul(e.reshape(b, kv_heads, groups * s, length), value)
        return (out / total.reshape(b, kv_heads, groups * s, 1)).reshape(b, heads, s, d)
    probs = torch.softmax(scores, dim=-1).reshape(b, kv_heads, groups * s, length)
    return torch.matmul(probs, value).reshape(b, heads, s, d)


def grouped_sdpa_segments(query: torch.Tensor, keys: tuple[torch.Tensor, ...], values: tuple[torch.Tensor, ...],
                          attn_mask: torch.Tensor | None = None, bias_of=additive_bias,
                          batch_invariant: bool = False) -> torch.Tensor:
    """grouped_sdpa over KV segments laid end to end (segment i's slots after segment i-1's), without joining them:
    the same softmax (one over all slots), each segment's share of the output computed against its own values."""
    b, heads, s, d = query.shape
    kv_heads = keys[0].shape[1]
    groups = heads // kv_heads
    # [B, kvH, G, S, D] against K, V as [B, kvH, 1, L, D]: the query groups are a broadcast batch axis, so a decode
    # step multiplies one query row per product (S = 1). onnxruntime's CPU MatMul runs those without packing the
    # keys or values first: 3.4x (q K^T) and 2.1x (P V) faster than the groups folded into the rows, as grouped_sdpa
    # does (64 rows x 2 KV heads x 2 groups, 316 slots, head_dim 64, 1 thread).
    q = (query * (1.0 / math.sqrt(int(d)))).reshape(b, kv_heads, groups, s, d)
    if batch_invariant:
        return _invariant_segments(q, keys, values, attn_mask, bias_of).reshape(b, heads, s, d)
    scores = torch.cat([torch.matmul(q, k.unsqueeze(2).transpose(-1, -2)) for k in keys], dim=-1)
    if attn_mask is not None:
        scores = scores + grouped_bias(attn_mask, scores.dtype, bias_of)
    probs = torch.softmax(scores, dim=-1)
    out, start = None, 0
    for i, (k, v) in enumerate(zip(keys, values)):
        part = torch.matmul(_segment_slots(probs, start, k, i == len(keys) - 1), v.unsqueeze(2))
        out = part if out is None else out + part
        start = start + k.shape[2]
    return out.reshape(b, heads, s, d)


def _segment_slots(t: torch.Tensor, start, key: torch.Tensor, last: bool) -> torch.Tensor:
    """The slots of t (last axis) that segment `key` covers from `start`; the last segment takes the remaining ones:
    one dynamic bound per split, none for the tail."""
    return t[..., start:] if last else t[..., start : start + key.shape[2]]


def _invariant_segments(q: torch.Tensor, keys: tuple[torch.Tensor, ...], values: tuple[torch.Tensor, ...],
                        attn_mask: torch.Tensor | None, bias_of) -> torch.Tensor:
    """grouped_sdpa_segments' batch-invariant form for q [B, kvH, G, S, D] -> [B, kvH, G, S, D]. The row max, the
    exponentials, the float64 sums and the products with V all go segment by segment, so the scores are never
    concatenated nor sliced back apart (those copies were ~14% of an int8 decoder call); the max of the segments'
    maxima and the float64 sum of their sums are what one softmax over all slots would take."""
    bias = None if attn_mask is None else grouped_bias(attn_mask, q.dtype, bias_of)
    scores, start = [], 0
    for i, k in enumerate(keys):
        part = torch.matmul(q, k.unsqueeze(2).transpose(-1, -2))
        if bias is not None:
            part = part + _segment_slots(bias, start, k, i == len(keys) - 1)
        scores.append(part)
        start = start + k.shape[2]
    row_max = torch.cat([part.amax(dim=-1, keepdim=True) for part in scores], dim=-1).amax(dim=-1, keepdim=True)
    out, total = None, None
    for part, v in zip(scores, values):
        e = torch.exp(part - row_max)
        sums = e.double().sum(dim=-1, keepdim=True)
        product = torch.matmul(e, v.unsqueeze(2))
        out, total = (product, sums) if out is None else (out + product, total + sums)
    return out / total.to(q.dtype)


class _SharedBias:
    """The additive bias of each mask tensor, made once: every layer of a traced forward gets the same mask object,
    so the graph computes one bias and adds it in each layer. Holds the masks so their ids stay theirs."""

    def __init__(self) -> None:
        self._made: dict[tuple[int, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        key = (id(mask), dtype)
        if key not in self._made:
            self._made[key] = (mask, additive_bias(mask, dtype))
        return self._made[key][1]


def _make_sdpa(bias_of: _SharedBias, batch_invariant: bool):
    def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if dropout_p or is_causal or scale is not None:
            raise NotImplementedError("export attention: only attn_mask is supported (the reference model uses no "
                                      "more)")
        return grouped_sdpa(query, key, value, attn_mask, bias_of, batch_invariant)

    return _sdpa


@contextlib.contextmanager
def export_friendly_attention(batch_invariant: bool = False) -> Iterator[None]:
    """Within this block the reference model's attention traces as grouped_sdpa (segment_attention as
    grouped_sdpa_segments), in their batch-invariant form if asked.

    Replaces the `F` (torch.nn.functional) that the model's modules look up at call time with a copy whose
    scaled_dot_product_attention is _sdpa (which reads the query grouping off the shapes, so enable_gqa or
    folded query heads both work); nothing global changes.
    """
    bias_of = _SharedBias()
    functional = types.SimpleNamespace(**{n: getattr(F, n) for n in dir(F) if not n.startswith("__")})
    functional.scaled_dot_product_attention = _make_sdpa(bias_of, batch_invariant)
    segments = lambda q, keys, values, mask: grouped_sdpa_segments(  # noqa: E731
        q, keys, values, mask, bias_of, batch_invariant)
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(language, "segment_attention", segments))
        for module in _MODEL_MODULES:
            if getattr(module, "F", None) is F:
                stack.enter_context(mock.patch.object(module, "F", functional))
        yield
