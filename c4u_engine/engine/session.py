"""ModelSession: a checkpoint's tokenizer, chat template, image pipeline, runner and encoder cache behind one object.

It turns chat messages into token ids, M-RoPE positions and image embeddings (one encode path and one encoder-cache
key, used by the scheduler, the whole-prompt passes and training), and runs whole-prompt prefill and decoding on
whichever runner it was given. Comparisons across requests are batched by the scheduler (scheduler.py); the
whole-prompt passes here (logits, chat) are the generic path, run on a lane's thread by the engine core.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from c4u_engine.engine.chat_template import ChatTemplate
from c4u_engine.engine.config import EngineConfig
from c4u_engine.engine.generation import decode
from c4u_engine.engine.lru import ByteLRU
from c4u_engine.engine.messages import collect_images, expand_image_pads, validate_messages
from c4u_engine.engine.sampling import Sampler, SamplingParams
from c4u_engine.engine.stats import StageTimer
from c4u_engine.engine.tokenizer import Tokenizer
from c4u_engine.errors import InvalidInputError, LimitExceededError, ModelFormatError
from c4u_engine.imaging import LoadedImage, load_image
from c4u_engine.models.config import ModelConfig
from c4u_engine.models.rope import mrope_position_ids
from c4u_engine.engine.pixels import concat_pixels, preprocess_device, preprocess_images
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
class ImageJob:
    """An image to embed: its preprocessed patches when the caller has them, and whether caches may be used."""

    image: LoadedImage
    pixels: np.ndarray | None
    use_cache: bool


@dataclass
class ChatResult:
    token_ids: list[int]
    text: str
    finish_reason: str
    prompt_tokens: int


class ModelSession:
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

    def tokenize(self, messages: list[dict], assistant_prefix: str = "",
                 images: list[LoadedImage] | None = None) -> Prompt:
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
        kernels = self.runner.kernels
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
    def encoder_key(self, image: LoadedImage) -> tuple:
        """What an image embedding depends on: the image's content, the preprocessing and the checkpoint."""
        return image.content_hash, self.preprocess_params.key(), self.fingerprint

    def preprocess_missing(self, images: Sequence[LoadedImage], use_cache: bool,
                           seconds: dict[str, float]) -> list[np.ndarray | None]:
        """Preprocessed pixels of the images the encoder cache lacks (None for the others), in one native call that
        releases the GIL: a caller may run it in its own thread (while its screening runs on another), so that the
        scheduler's encode finds the pixels ready."""
        t0 = time.perf_counter()
        pixels: list[np.ndarray | None] = [None] * len(images)
        todo = [i for i, im in enumerate(images) if not (use_cache and self.encoder_key(im) in self.encoder_cache)]
        if todo:
            values, grid = self.preprocess([images[i].pixels for i in todo])
            bounds = np.cumsum([0, *(int(np.prod(g)) for g in grid)])
            for k, i in enumerate(todo):
                pixels[i] = values[bounds[k] : bounds[k + 1]]
        seconds["preprocess"] = seconds.get("preprocess", 0.0) + time.perf_counter() - t0
        return pixels

    def encode(self, jobs: Sequence[ImageJob]) -> list[tuple[Any, bool]]:
        """(embedding, came from the cache) for each job: cache hits reused for jobs with use_cache, the rest
        deduplicated by content and encoded in one vision call (pixels the job brings are used, the others
        preprocessed now), and stored for the jobs with use_cache."""
        keys = [self.encoder_key(job.image) for job in jobs]
        hits = [self.encoder_cache.get(key) if job.use_cache else None for key, job in zip(keys, jobs)]
        todo: dict = {}  # a job that may not use the cache is encoded even when another job's image was a hit
        for key, job, hit in zip(keys, jobs, hits):
            if hit is None:
                todo.setdefault(key, job)
        encoded: dict = {}
        if todo:
            pixels = [job.pixels if job.pixels is not None else self.preprocess([job.image.pixels])[0]
                      for job in todo.values()]
            grids = np.asarray([self.grid_of(job.image) for job in todo.values()], np.int64)
            encoded = dict(zip(todo, self.runner.encode_images(concat_pixels(pixels), grids)))
            for key in {key for key, job, hit in zip(keys, jobs, hits) if job.use_cache and hit is None}:
                self.encoder_cache.put(key, encoded[key])
        return [(encoded[key], False) if hit is None else (hit, True) for key, hit in zip(keys, hits)]

    # -- whole-prompt passes (the reference path; selections run through the scheduler) ----------------
    def prefill(self, prompt: Prompt, timer: StageTimer | None = None, reserve: int = 0):
        timer = timer or StageTimer()
        t0 = time.perf_counter()
        embeds_img = [e for e, _ in self.encode([ImageJob(im, None, True) for im in prompt.images])]
        timer.add_time("vision", t0)
        t0 = time.perf_counter()
        embeds = self.runner.embed(prompt.ids[None, :], embeds_img)
        s = len(prompt.ids)
        logits, kv = self.runner.forward(
            embeds, prompt.positions[:, None, :], None, np.ones((1, s), dtype=bool),
            np.array([[s - 1]], dtype=np.int64),
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
