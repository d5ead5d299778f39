"""Next-token choice from logits: greedy, or temperature / top-k / top-p sampling with a seeded generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from c4u_engine.errors import InvalidInputError


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise InvalidInputError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InvalidInputError(f"top_k must be >= 0, got {self.top_k}")


class Sampler:
    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)
        self._draws = 0  # rows drawn through the kernel: each draw's Philox counter (fresh noise per row and step)
        # the kernel's Philox key: the given seed, or (seed None) one drawn from fresh entropy like numpy's generator
        self._kernel_seed = params.seed if params.seed is not None else int(self._rng.integers(1, 2**31))

    def sample_with(self, kernels, logits: np.ndarray) -> np.ndarray:
        """As __call__, through ops.sampling on the kernel mode's device (runners/kernel_mode.py). Greedy gives the
        same tokens (lowest id on ties, as argmax); sampling draws from the same distribution with Philox noise,
        so its tokens differ from numpy's generator (the same seed gives the same tokens on every kernel device)."""
        from c4u_engine.ops.sampling import sample

        p, batch = self.params, logits.shape[0]
        offsets = self._draws + np.arange(batch, dtype=np.int64)
        self._draws += batch
        data = np.ascontiguousarray(logits, dtype=np.float32)
        if kernels.device == "cuda":  # the runner returns host logits; the kernel takes them on the device
            import torch

            data = torch.from_numpy(data).cuda()
        kernels.calls["sample"] += 1
        out = sample(data, temperature=p.temperature if p.do_sample else 0.0, top_k=p.top_k if p.do_sample else 0,
                     top_p=p.top_p if p.do_sample else 1.0, seed=self._kernel_seed, offsets=offsets,
                     device=kernels.device)
        return np.asarray(out.cpu() if hasattr(out, "cpu") else out).astype(np.int64)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """logits float32 [B, V] -> token ids int64 [B]."""
        p = self.params
        if not p.do_sample:
            return logits.argmax(axis=-1).astype(np.int64)
        scaled = logits.astype(np.float64) / p.temperature
        if p.top_k:
            kth = np.partition(scaled, -p.top_k, axis=-1)[:, -p.top_k][:, None]
            scaled = np.where(scaled < kth, -np.inf, scaled)
        probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        if p.top_p < 1.0:
            order = np.argsort(-probs, axis=-1)
            sorted_p = np.take_along_axis(probs, order, axis=-1)
            # keep the smallest set whose mass reaches top_p (the first token always stays)
            drop_sorted = (np.cumsum(sorted_p, axis=-1) - sorted_p) >= p.top_p
            drop = np.zeros_like(drop_sorted)
            np.put_along_axis(drop, order, drop_sorted, axis=-1)
            probs = np.where(drop, 0.0, probs)
            probs /= probs.sum(axis=-1, keepdims=True)
        u = self._rng.random((probs.shape[0], 1))
        return np.minimum((np.cumsum(probs, axis=-1) < u).sum(axis=-1), probs.shape[1] - 1).astype(np.int64)
