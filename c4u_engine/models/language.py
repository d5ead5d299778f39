"""Qwen2.5-VL language model: a Qwen2 decoder (GQA, M-RoPE, RMSNorm, SwiGLU) with an explicit KV cache.

forward takes and returns the cache as plain tensors so that one signature serves prefill, decode, prefix
reuse and ONNX/TensorRT export. Attention rules, for query token i (0-based among the S new tokens) and key
slot j of the P + S cached + new slots:
    attend  iff  attention_mask[b, j] and j <= P + i      (causal; the mask lets the engine pad)
    or j == P + i                                         (a token always sees itself)
The second rule only matters for padding queries, whose rows would otherwise be fully masked and produce NaN;
real tokens never attend to masked slots. Both left and right padding work: left padding puts the pads'
slots first (mask False there), right padding puts them last within the new tokens (causality already hides
them from real tokens; in later steps their slots stay False in the mask). Position ids are explicit, so pads
do not shift the real tokens' positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from c4u_engine.errors import InvalidInputError
from c4u_engine.models.config import TextConfig
from c4u_engine.models.layers import GatedMLP, RMSNorm, apply_rotary


def gqa_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA with q [B, H, S, D] over keys/values [B, kvH, L, D] (views allowed): torch's grouped-query mode reads
    each KV head for its query group instead of materializing repeat_kv copies of the whole cache."""
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=q.shape[1] != keys.shape[1])


def segment_attention(q: torch.Tensor, keys: tuple[torch.Tensor, ...], values: tuple[torch.Tensor, ...],
                      mask: torch.Tensor) -> torch.Tensor:
    """gqa_attention over KV segments laid end to end (slots in segment order). Eager, the segments are joined; the
    export (export/attention.py) computes per-segment products instead, so a decode step never copies the frozen
    segment (the bulk of the cache) into a new one."""
    return gqa_attention(q, torch.cat(keys, dim=2), torch.cat(values, dim=2), mask)


class MRotary(nn.Module):
    """cos/sin [B, S, head_dim] from position ids [3, B, S]: frequency band k takes axis k % 3 per mrope_section."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.head_dim = cfg.head_dim
        self.theta = cfg.rope_theta
        self.sections = list(cfg.mrope_section)
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Float32 inverse frequencies, as transformers' default rope computes them."""
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device) / self.head_dim
        return 1.0 / (self.theta**exponent)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.float()  # [3, B, S, head_dim / 2]
        bands = freqs.split(self.sections, dim=-1)
        freqs = torch.cat([band[i % 3] for i, band in enumerate(bands)], dim=-1)  # [B, S, head_dim / 2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


class Attention(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=False)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """q [B, H, S, D], k and v [B, kvH, S, D] of the new tokens, rotary applied."""
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        return apply_rotary(q, cos[:, None], sin[:, None]), apply_rotary(k, cos[:, None], sin[:, None]), v

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        past_key: torch.Tensor,
        past_value: torch.Tensor,
        frozen: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (output, keys, values): the cache grown by the new tokens, concat(past, new). frozen: (keys,
        values) of slots before the past ones, attended but not returned (the caller keeps them as they are)."""
        b, s, _ = x.shape
        q, k, v = self.project(x, cos, sin)
        keys = torch.cat([past_key.to(k.dtype), k], dim=2)
        values = torch.cat([past_value.to(v.dtype), v], dim=2)
        if frozen is None:
            out = gqa_attention(q, keys, values, mask)
        else:
            out = segment_attention(q, (frozen[0].to(k.dtype), keys), (frozen[1].to(v.dtype), values), mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1)), keys, values

    def forward_into(self, x, cos, sin, mask, key_buffer: torch.Tensor, value_buffer: torch.Tensor, past: int,
                     decode_attention=None):
        """As forward, but the new K/V are written into preallocated buffers [B, kvH, capacity, D] at slots
        [past, past + S) and attention reads the buffers' first past + S slots in place (no cache copies).
        decode_attention: used instead of gqa_attention (same signature) when S == 1 (runners/kernel_attention.py)."""
        b, s, _ = x.shape
        q, k, v = self.project(x, cos, sin)
        key_buffer[:, :, past : past + s] = k
        value_buffer[:, :, past : past + s] = v
        attend = decode_attention if decode_attention is not None and s == 1 else gqa_attention
        out = attend(q, key_buffer[:, :, : past + s], value_buffer[:, :, : past + s], mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))

    def forward_with(self, x, cos, sin, attend):
        """As forward_into, with the cache owned by `attend(q, k, v) -> out [B, H, S, D]` (it stores k, v where it
        keeps the cache and attends over it; runners/kernel_mode.py: paged KV in block pools)."""
        b, s, _ = x.shape
        q, k, v = self.project(x, cos, sin)
        return self.o_proj(attend(q, k, v).transpose(1, 2).reshape(b, s, -1))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, bias=False)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        past_key: torch.Tensor,
        past_value: torch.Tensor,
        frozen: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn, keys, values = self.self_attn(self.input_layernorm(x), cos, sin, mask, past_key, past_value, frozen)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), keys, values

    def forward_into(self, x, cos, sin, mask, key_buffer, value_buffer, past: int, decode_attention=None):
        x = x + self.self_attn.forward_into(self.input_layernorm(x), cos, sin, mask, key_buffer, value_buffer, past,
                                            decode_attention)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_with(self, x, cos, sin, attend):
        x = x + self.self_attn.forward_with(self.input_layernorm(x), cos, sin, attend)
        return x + self.mlp(self.post_attention_layernorm(x))


class LanguageModel(nn.Module):
    """embed_tokens -> decoder layers -> norm -> lm_head (tied to embed_tokens when tie_word_embeddings)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = MRotary(cfg)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings [B, S, H] of input_ids [B, S]."""
        return self.embed_tokens(input_ids)

    def empty_cache(
        self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Past keys and values with P = 0 for a first (prefill) call."""
        cfg = self.config
        dtype = dtype or self.embed_tokens.weight.dtype
        shape = (batch, cfg.num_key_value_heads, 0, cfg.head_dim)
        keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_hidden_layers)]
        values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_hidden_layers)]
        return keys, values

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        past_keys: list[torch.Tensor],
        past_values: list[torch.Tensor],
        attention_mask: torch.Tensor,
        logits_index: torch.Tensor | None = None,
        frozen_keys: list[torch.Tensor] | None = None,
        frozen_values: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run S new tokens after P cached ones.

        inputs_embeds [B, S, H]; position_ids [3, B, S] int64; past_keys / past_values: one [B, kvH, P, D] per
        layer (P may be 0); attention_mask bool [B, P + S] (True = attend); logits_index int64 [B, K] positions
        within S whose logits to return (None = all S). Returns (logits [B, K, V] float32, new_keys,
        new_values) with the caches grown to [B, kvH, P + S, D].
        frozen_keys / frozen_values: one [B, kvH, F, D] per layer, slots before the past ones (F may be 0): attended
        like them, but not part of the returned caches, which stay [B, kvH, P + S, D]; attention_mask is then
        [B, F + P + S]. The exported decoder takes them so a decode step copies only the short past segment.
        """
        frozen = frozen_keys is not None
        if frozen != (frozen_values is not None):
            raise InvalidInputError("frozen_keys and frozen_values go together")
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            self._check_inputs(inputs_embeds, position_ids, past_keys, past_values, attention_mask, logits_index,
                               frozen_keys, frozen_values)
        s = inputs_embeds.shape[1]
        p = past_keys[0].shape[2] + (frozen_keys[0].shape[2] if frozen else 0)
        mask = self._mask(attention_mask, p, s)
        cos, sin = self.rotary(position_ids, inputs_embeds.dtype)
        x = inputs_embeds
        new_keys, new_values = [], []
        for i, (layer, past_key, past_value) in enumerate(zip(self.layers, past_keys, past_values)):
            x, keys, values = layer(x, cos, sin, mask, past_key, past_value,
                                    (frozen_keys[i], frozen_values[i]) if frozen else None)
            new_keys.append(keys)
            new_values.append(values)
        return self._logits(x, logits_index), new_keys, new_values

    def forward_into(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        key_buffers: list[torch.Tensor],
        value_buffers: list[torch.Tensor],
        past: int,
        attention_mask: torch.Tensor,
        logits_index: torch.Tensor | None = None,
        decode_attention=None,
    ) -> torch.Tensor:
        """forward for the serving path: the cache lives in preallocated buffers [B, kvH, capacity, D] per layer
        holding `past` valid slots; the S new tokens' K/V are written at [past, past + S) in place. Same attention
        rules and logits as forward; returns the logits only (the buffers now hold past + S slots).
        decode_attention: used instead of gqa_attention when S == 1 (the caller's choice, per call: runners that
        share one model's weights may attend differently, runners/kernel_attention.py)."""
        s = inputs_embeds.shape[1]
        if past + s > key_buffers[0].shape[2]:
            raise InvalidInputError(f"KV buffer of {key_buffers[0].shape[2]} slots cannot take {past} + {s} tokens")
        mask = self._mask(attention_mask, past, s)
        cos, sin = self.rotary(position_ids, inputs_embeds.dtype)
        x = inputs_embeds
        for layer, kb, vb in zip(self.layers, key_buffers, value_buffers):
            x = layer.forward_into(x, cos, sin, mask, kb, vb, past, decode_attention)
        return self._logits(x, logits_index)

    def forward_with(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, attend,
                     logits_index: torch.Tensor | None = None) -> torch.Tensor:
        """forward for a cache this module does not hold: `attend(layer, q, k, v) -> out [B, H, S, D]` stores the
        new tokens' k, v [B, kvH, S, D] and attends q [B, H, S, D] over the row's whole cache (the attention rules
        are then attend's). Returns the logits."""
        cos, sin = self.rotary(position_ids, inputs_embeds.dtype)
        x = inputs_embeds
        for i, layer in enumerate(self.layers):
            x = layer.forward_with(x, cos, sin, lambda q, k, v, i=i: attend(i, q, k, v))
        return self._logits(x, logits_index)

    @staticmethod
    def _mask(attention_mask: torch.Tensor, p: int, s: int) -> torch.Tensor:
        """bool [B, 1, S, P + S]: the attention rules of the module docstring."""
        device = attention_mask.device
        query_slot = torch.arange(s, device=device) + p  # [S]
        key_slot = torch.arange(p + s, device=device)  # [P + S]
        causal = key_slot[None, :] <= query_slot[:, None]
        itself = key_slot[None, :] == query_slot[:, None]
        return ((causal[None] & attention_mask[:, None, :].bool()) | itself[None])[:, None]

    def _logits(self, x: torch.Tensor, logits_index: torch.Tensor | None) -> torch.Tensor:
        x = self.norm(x)
        if logits_index is not None:
            x = torch.gather(x, 1, logits_index[:, :, None].expand(-1, -1, x.shape[-1]))
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, weight).float()

    def _check_inputs(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        past_keys: list[torch.Tensor],
        past_values: list[torch.Tensor],
        attention_mask: torch.Tensor,
        logits_index: torch.Tensor | None,
        frozen_keys: list[torch.Tensor] | None = None,
        frozen_values: list[torch.Tensor] | None = None,
    ) -> None:
        cfg = self.config
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[2] != cfg.hidden_size:
            found = list(inputs_embeds.shape)
            raise InvalidInputError(f"inputs_embeds must be [B, S, {cfg.hidden_size}], got {found}")
        b, s, _ = inputs_embeds.shape
        if tuple(position_ids.shape) != (3, b, s):
            raise InvalidInputError(f"position_ids must be [3, {b}, {s}], got {tuple(position_ids.shape)}")
        n = cfg.num_hidden_layers
        p = 0
        for kind, keys, values in (("past", past_keys, past_values), ("frozen", frozen_keys, frozen_values)):
            if keys is None:
                continue
            if len(keys) != n or len(values) != n:
                raise InvalidInputError(f"need {n} {kind} key and value tensors, got {len(keys)} and {len(values)}")
            slots = keys[0].shape[2] if keys[0].ndim == 4 else -1
            expected = (b, cfg.num_key_value_heads, slots, cfg.head_dim)
            for name, cache in ((f"{kind}_keys", keys), (f"{kind}_values", values)):
                for i, t in enumerate(cache):
                    if tuple(t.shape) != expected:
                        raise InvalidInputError(f"{name}[{i}] must be {list(expected)} [B, kvH, slots, D], got "
                                                f"{list(t.shape)}")
            p += slots
        if tuple(attention_mask.shape) != (b, p + s):
            found = list(attention_mask.shape)
            raise InvalidInputError(f"attention_mask must be [B, P + S] = [{b}, {p + s}], got {found}")
        if logits_index is not None and (logits_index.ndim != 2 or logits_index.shape[0] != b):
            raise InvalidInputError(f"logits_index must be [{b}, K], got {list(logits_index.shape)}")
