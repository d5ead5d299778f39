"""ModelEngine: a checkpoint's tokenizer, chat template, image pipeline, runner and caches behind one object.

It turns chat messages into token ids, M-RoPE positions and image embeddings, and runs prefill and decoding on
whichever runner it was given. Comparisons across requests are batched by the scheduler (scheduler.py); the
whole-prompt passes here (logits, chat) are the generic path, run on the scheduler's thread by the Engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from c4u_engine.engine.chat_template import ChatTemplate
from c4u_engine.engine.config import EngineConfig
from c4u_engine.engine.generation import decode
from c4u_engine.engine.lru import ByteLRU
from c4u_engine.engine.messages import collect_images, expand_image_pads, validate_messages
from c4u_engine.engine.sampling import Sampler, SamplingParams
from c4u_engine.engine.tokenizer import Tokenizer
from c4u_engine.errors import InvalidInputError, LimitExceededError, ModelFormatError
from c4u_engine.imaging import LoadedImage, load_image
from c4u_engine.models.config import ModelConfig
from c4u_engine.models.rope import mrope_position_ids
from c4u_engine.engine.pixels import preprocess_device, preprocess_images
from c4u_engine.ops.preprocess import PreprocessParams, grid_thw_for
from c4u_engine.runners.base import Runner


@dataclass
class Prompt:
    """A tokenized prompt: ids with image pads expanded, its images and M-RoPE positions."""

    ids: np.ndarray  # int64 [S]
    images: list[LoadedImage]
    grids: np.ndarray  # int64 [n_images, 3]
    positions: np.ndarray  # int64 [3, S]

    @property
    def next_position(self) -> int:
        return int(self.positions[:, -1].max()) + 1


@dataclass
class ChatResult:
    token_ids: list[int]
    text: str
    finish_reason: str
    prompt_tokens: int


@dataclass
class StageTimer:
    """Seconds per stage and counters, reported in Selection.stats."""

    seconds: dict[str, float] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def add_time(self, stage: str, t0: float) -> None:
        self.add_seconds(stage, time.perf_counter() - t0)

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + int(n)


class ModelEngine:
    def __init__(self, model_dir: str | Path, runner: Runner, *, config: EngineConfig | None = None) -> None:
        model_dir = Path(model_dir)
        self.model_dir = model_dir
        self.runner = runner
        self.engine_config = config or EngineConfig()
        self.config = ModelConfig.from_json(model_dir / "config.json")
        self.tokenizer = Tokenizer.from_dir(model_dir)
        self.chat_template = ChatTemplate.from_dir(model_dir)
        self.preprocess_params = _load_preprocess_params(model_dir)
        from c4u_engine.models.checkpoint_files import checkpoint_fingerprint

        self.fingerprint = checkpoint_fingerprint(model_dir)
        self.encoder_cache = ByteLRU(self.engine_config.encoder_cache_bytes, runner.embeds_nbytes)
        self.preprocess_device, self.preprocess_why_not_cuda = preprocess_device(runner)
        self.max_context = int(self.config.text.max_position_embeddings)

    # -- prompts ---------------------------------------------------------------------------------------
    def load_images(self, objs: Sequence[Any]) -> list[LoadedImage]:
        return [o if isinstance(o, LoadedImage) else load_image(o, max_pixels=self.engine_config.max_image_pixels)
                for o in objs]

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[Any, np.ndarray]:
        """Pixel values (on the runner's GPU when it takes them there; engine/pixels.py) and host grids."""
        return preprocess_images(images, self.preprocess_params, self.preprocess_device, self.runner.device)

    def grid_of(self, image: LoadedImage) -> tuple[int, int, int]:
        h, w = image.pixels.shape[:2]
        return tuple(int(x) for x in grid_thw_for(h, w, self.preprocess_params))

    def image_token_count(self, grid: Sequence[int]) -> int:
        merge = self.preprocess_params.merge_size
        return int(grid[0] * grid[1] * grid[2] // (merge * merge))

    def render(self, messages: list[dict], assistant_prefix: str = "") -> str:
        return self.chat_template.render(messages, add_generation_prompt=True) + assistant_prefix

    def tokenize(self, messages: list[dict], assistant_prefix: str = "", images: list[LoadedImage] | None = None) -> Prompt:
        """Messages (transformers format) to a Prompt. `images` may pass already-loaded images (same order)."""
        messages = validate_messages(messages)
        if images is None:
            images = self.load_images(collect_images(messages))
        grids = np.array([self.grid_of(im) for im in images], dtype=np.int64).reshape(-1, 3)
        ids = self.tokenizer.encode(self.render(messages, assistant_prefix))
        ids = expand_image_pads(ids, [self.image_token_count(g) for g in grids], self.tokenizer.image_pad_id)
        ids = np.asarray(ids, dtype=np.int64)
        positions = self.position_ids(ids[None, :], grids)
        return Prompt(ids=ids, images=list(images), grids=grids, positions=np.asarray(positions)[:, 0, :])

    def position_ids(self, input_ids: np.ndarray, grids: np.ndarray) -> np.ndarray:
        """M-RoPE position ids int64 [3, B, S] of prompts [B, S] holding images of `grids` (in order): numpy
        (models/rope.py), or ops.mrope on the runner's kernel device in kernel mode (runners/kernel_mode.py)."""
        kernels = getattr(self.runner, "kernels", None)
        if kernels is None:
            return mrope_position_ids(input_ids, grids, self.config)[0]
        return kernels.positions(input_ids, grids, self.config.image_token_id, self.config.vision.spatial_merge_size)

    def check_context(self, n_tokens: int, max_new_tokens: int = 0) -> None:
        if n_tokens + max_new_tokens > self.max_context:
            raise LimitExceededError(
                f"prompt of {n_tokens} tokens + {max_new_tokens} new tokens exceeds the model's context of "
                f"{self.max_context} tokens (shorten the profile or use smaller images)"
            )

    # -- vision ----------------------------------------------------------------------------------------
    def encode(self, images: Sequence[LoadedImage], timer: StageTimer | None = None, use_cache: bool = True) -> list:
        """Image embeddings for each image: cache hits reused, all misses (deduplicated) in one batched call."""
        timer = timer or StageTimer()
        keys = [(im.content_hash, self.preprocess_params.key(), self.fingerprint) for im in images]
        found: dict = {}
        if use_cache:
            for k in set(keys):
                hit = self.encoder_cache.get(k)
                if hit is not None:
                    found[k] = hit
        missing: dict = {}
        for k, im in zip(keys, images):
            if k not in found and k not in missing:
                missing[k] = im
        timer.count("images_cached", len(set(keys)) - len(missing))
        timer.count("images_encoded", len(missing))
        if missing:
            t0 = time.perf_counter()
            pixel_values, grid = self.preprocess([im.pixels for im in missing.values()])
            timer.add_time("preprocess", t0)
            t0 = time.perf_counter()
            outs = self.runner.encode_images(pixel_values, grid)
            timer.add_time("vision", t0)
            for k, out in zip(missing, outs):
                found[k] = out
                if use_cache:
                    self.encoder_cache.put(k, out)
        return [found[k] for k in keys]

    # -- whole-prompt passes (the reference path; selections run through the scheduler) ----------------
    def prefill(self, prompt: Prompt, timer: StageTimer | None = None, reserve: int = 0):
        timer = timer or StageTimer()
        embeds_img = self.encode(prompt.images, timer)
        t0 = time.perf_counter()
        embeds = self.runner.embed(prompt.ids[None, :], embeds_img)
        s = len(prompt.ids)
        logits, kv = self.runner.forward(
            embeds, prompt.positions[:, None, :], None, np.ones((1, s), dtype=bool), np.array([[s - 1]], dtype=np.int64),
            reserve=reserve,
        )
        timer.add_time("prefill", t0)
        timer.count("tokens_prefilled", s)
        return logits[:, 0], kv

    def logits(self, messages: list[dict], assistant_prefix: str = "") -> np.ndarray:
        """float32 [vocab] next-token logits after the rendered prompt (+ assistant_prefix)."""
        prompt = self.tokenize(messages, assistant_prefix)
        self.check_context(len(prompt.ids))
        logits, _ = self.prefill(prompt)
        return logits[0]

    def chat(self, messages: list[dict], *, max_new_tokens: int = 128, min_new_tokens: int = 0,
             assistant_prefix: str = "", sampling: SamplingParams | None = None) -> ChatResult:
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        prompt = self.tokenize(messages, assistant_prefix)
        self.check_context(len(prompt.ids), max_new_tokens)
        logits, kv = self.prefill(prompt, reserve=max_new_tokens)
        result = decode(
            self.runner, kv, np.ones((1, len(prompt.ids)), dtype=bool), logits,
            np.array([prompt.next_position]), max_new_tokens=max_new_tokens,
            sampler=Sampler(sampling or SamplingParams()), eos_ids=self.tokenizer.eos_token_ids,
            min_new_tokens=min_new_tokens,
        )
        tokens = result.tokens[0]
        return ChatResult(tokens, self.tokenizer.decode(tokens, skip_special_tokens=True),
                          result.finished_by[0], len(prompt.ids))


def _load_preprocess_params(model_dir: Path) -> PreprocessParams:
    path = model_dir / "preprocessor_config.json"
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing (the image preprocessing parameters of the checkpoint)")
    return PreprocessParams.from_preprocessor_config(path)
