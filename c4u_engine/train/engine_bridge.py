"""The serving engine's own building blocks, pointed at the model being trained.

Training tokenizes prompts with ModelSession.tokenize (so train and serve prompts are the same token ids by
construction) and GRPO samples with the engine's batched KV-cached `decode`; both need a runner over the in-memory
weights rather than over the files on disk. The engine's caches are off: the weights change every step.
"""

from __future__ import annotations

from pathlib import Path

import torch

from c4u_engine.engine.config import EngineConfig
from c4u_engine.engine.session import ModelSession
from c4u_engine.runners.torch_runner import TorchRunner


class InMemoryRunner(TorchRunner):
    """The torch runner over a live Qwen25VL (shared, not copied: it always runs the current weights)."""

    def __init__(self, model: torch.nn.Module) -> None:  # noqa: D107 - no checkpoint to load: bind the live model
        self._bind(model, next(model.parameters()).device)


def training_session(model_dir: str | Path, model: torch.nn.Module) -> ModelSession:
    """A ModelSession reading model_dir's tokenizer, chat template and image settings, running `model`, no caches.

    model_dir must be a complete checkpoint directory (its weights file is read only for the fingerprint)."""
    config = EngineConfig(encoder_cache_bytes=0, prefix_cache_bytes=0)
    return ModelSession(model_dir, InMemoryRunner(model), config=config)
