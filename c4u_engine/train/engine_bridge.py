"""The serving engine's own building blocks, pointed at the model being trained.

Training tokenizes prompts with ModelEngine.tokenize (so train and serve prompts are the same token ids by
construction) and GRPO samples with the engine's batched KV-cached `decode`; both need a runner over the in-memory
weights rather than over the files on disk. The engine's caches are off: the weights change every step.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from c4u_engine.engine.config import EngineConfig
from c4u_engine.engine.model_engine import ModelEngine
from c4u_engine.runners.torch_runner import TorchRunner


class InMemoryRunner(TorchRunner):
    """The torch runner over a live Qwen25VL (shared, not copied: it always runs the current weights)."""

    def __init__(self, model: torch.nn.Module) -> None:  # noqa: D107 - sets what TorchRunner.__init__ would
        param = next(model.parameters())
        cfg = model.config.text
        self.model = model
        self.device = str(param.device)
        self.dtype = param.dtype
        self.num_layers = cfg.num_hidden_layers
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.hidden_size = cfg.hidden_size
        self.vocab_size = cfg.vocab_size
        self.image_token_id = model.config.image_token_id
        self._torch_device = param.device
        self._lock = threading.Lock()


def training_engine(model_dir: str | Path, model: torch.nn.Module) -> ModelEngine:
    """A ModelEngine reading model_dir's tokenizer, chat template and image settings, running `model`, no caches.

    model_dir must be a complete checkpoint directory (its weights file is read only for the fingerprint)."""
    config = EngineConfig(encoder_cache_bytes=0, prefix_cache_bytes=0)
    return ModelEngine(model_dir, InMemoryRunner(model), config=config)
