"""The public face: `Engine` on any Qwen2.5-VL-family checkpoint, and `select()` on the built-in model."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Sequence

from c4u_engine.errors import C4UError, InvalidImageError, InvalidInputError, LimitExceededError, ProfileError
from c4u_engine.profile import Profile
from c4u_engine.selection.results import Comparison, Selection
from c4u_engine.selection.tournament import Tournament

STRATEGIES = ("knockout", "round_robin")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


class Engine:
    """A loaded checkpoint, ready to compare and select creatives.

    model_dir: a Hugging Face Qwen2.5-VL directory (config.json, safetensors, tokenizer, chat template,
    preprocessor_config.json; an optional c4u_prompt.json with the checkpoint's own prompt wording).
    device: "cpu" or "cuda[:N]"; dtype: None (float32 on CPU, the checkpoint's dtype on CUDA), "float32",
    "bfloat16" or "float16". prompt: a PromptTemplate overriding the checkpoint's. Cache sizes are in bytes;
    0 disables a cache.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str | None = None, *,
                 backend: str = "auto", prompt=None, max_candidates: int = 64, max_image_pixels: int = 50_000_000,
                 encoder_cache_bytes: int = 256 << 20, prefix_cache_bytes: int = 512 << 20,
                 max_batch_rows: int = 64) -> None:
        from c4u_engine.engine.comparisons import ComparisonRunner
        from c4u_engine.engine.model_engine import EngineLimits, ModelEngine
        from c4u_engine.engine.prefix_cache import PrefixCache
        from c4u_engine.engine.prompt import load_prompt_template
        from c4u_engine.runners import create_runner

        if backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
        if not isinstance(max_candidates, int) or max_candidates < 1:
            raise InvalidInputError(f"max_candidates must be a positive int, got {max_candidates!r}")
        self.model_dir = Path(model_dir)
        self.runner = create_runner(self.model_dir, backend=backend, device=device, dtype=dtype)
        limits = EngineLimits(max_image_pixels=max_image_pixels, encoder_cache_bytes=encoder_cache_bytes,
                              prefix_cache_bytes=prefix_cache_bytes, max_candidates=max_candidates)
        self._core = ModelEngine(self.model_dir, self.runner, limits=limits)
        self.prompt = prompt if prompt is not None else load_prompt_template(self.model_dir)
        self._prefix_cache = PrefixCache(prefix_cache_bytes, self.runner.kv_nbytes)
        self._comparisons = ComparisonRunner(self._core, self.prompt, self._prefix_cache, max_batch_rows)
        self.max_candidates = max_candidates
        self._lock = self._core.lock

    # -- facts -----------------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.runner.name

    @property
    def device(self) -> str:
        return self.runner.device

    @property
    def answer_token_ids(self) -> tuple[int, int]:
        """Token ids of "A" and "B" as the model emits them right after the fast-mode assistant prefix."""
        with self._lock:
            return self._comparisons.answer_token_ids()

    # -- generic model access --------------------------------------------------------------------------
    def logits(self, messages: list[dict], assistant_prefix: str = ""):
        """float32 numpy [vocab]: next-token logits after the rendered prompt and `assistant_prefix`."""
        return self._core.logits(messages, assistant_prefix)

    def chat(self, messages: list[dict], max_new_tokens: int = 128, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, top_k: int = 0, seed: int | None = None, assistant_prefix: str = "",
             min_new_tokens: int = 0):
        """Generate with a KV cache. Returns an object with .token_ids (new tokens only), .text, .finish_reason."""
        from c4u_engine.engine.sampling import SamplingParams

        params = SamplingParams(do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        return self._core.chat(messages, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                               assistant_prefix=assistant_prefix, sampling=params)

    # -- comparisons -----------------------------------------------------------------------------------
    def comparison_messages(self, image_a: Any, image_b: Any, profile: Any, mode: str = "fast") -> tuple[list[dict], str]:
        """(messages, assistant_prefix): exactly what the engine feeds the model for one comparison, so the
        decision can be replayed with transformers (apply_chat_template + assistant_prefix)."""
        _check_mode(mode, allow_hybrid=False)
        with self._lock:
            return self._comparisons.messages(_profile(profile), image_a, image_b, mode)

    def compare(self, image_a: Any, image_b: Any, profile: Any, mode: str = "fast", *, max_new_tokens: int = 256,
                use_cache: bool = True) -> Comparison:
        """Judge one ordered pair (image_a shown as Creative A). `mode` "fast" or "reason"."""
        from c4u_engine.engine.model_engine import StageTimer

        _check_mode(mode, allow_hybrid=False)
        _check_max_new_tokens(max_new_tokens)
        profile = _profile(profile)
        with self._lock:
            self._check_profile_tokens(profile)
            images = self._core.load_images([image_a, image_b])
            embeds = self._core.encode(images, use_cache=use_cache)
            (res,) = self._comparisons.run(profile, images, embeds, [(0, 1)], mode, max_new_tokens=max_new_tokens,
                                           use_cache=use_cache, timer=StageTimer())
        return _to_comparison(res, mode)

    def select(self, images: Sequence[Any], profile: Any, *, mode: str = "fast", strategy: str = "knockout",
               both_orders: bool = True, max_new_tokens: int = 256, strict: bool = False,
               use_cache: bool = True) -> Selection:
        """Pick the creative this user is most likely to click. See Selection for what comes back.

        mode: "fast" (answer-token probabilities, one forward pass per comparison), "reason" (chain of thought for
        every comparison) or "hybrid" (fast tournament, then reasoning for the comparisons that decided the winner).
        strategy: "knockout" (2(N-1) comparisons with both orders) or "round_robin" (N(N-1)).
        strict: raise on the first invalid image instead of reporting it in Selection.rejected.
        """
        from c4u_engine.engine.model_engine import StageTimer

        _check_mode(mode, allow_hybrid=True)
        if strategy not in STRATEGIES:
            raise InvalidInputError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
        _check_max_new_tokens(max_new_tokens)
        if isinstance(images, (str, bytes, Path)) or not hasattr(images, "__len__"):
            raise InvalidInputError("images must be a sequence of images (paths, bytes, PIL images or arrays)")
        if len(images) > self.max_candidates:
            raise LimitExceededError(f"{len(images)} candidates exceed max_candidates={self.max_candidates}")
        profile = _profile(profile)
        timer = StageTimer()
        t_start = time.perf_counter()
        with self._lock:
            self._check_profile_tokens(profile)
            loaded, rejected = self._load_candidates(images, strict, timer)
            unique, duplicates = _deduplicate(loaded)
            if not unique:
                detail = "; ".join(f"#{i}: {r}" for i, r in rejected.items()) or "no images given"
                raise InvalidInputError(f"no valid candidate images ({detail})")
            cand_images = [loaded[i] for i in unique]
            embeds = self._core.encode(cand_images, timer, use_cache=use_cache)
            tour_mode = "fast" if mode == "hybrid" else mode
            tournament = Tournament(len(unique), strategy, both_orders)
            while pairs := tournament.next_round():
                results = self._comparisons.run(profile, cand_images, embeds, pairs, tour_mode,
                                                max_new_tokens=max_new_tokens, use_cache=use_cache, timer=timer)
                tournament.record([_to_comparison(r, tour_mode) for r in results])
            selection_local = tournament.selection()
            comparisons = list(selection_local.comparisons)
            if mode == "hybrid" and selection_local.deciding_pairs:
                pairs = list(selection_local.deciding_pairs)
                results = self._comparisons.run(profile, cand_images, embeds, pairs, "reason",
                                                max_new_tokens=max_new_tokens, use_cache=use_cache, timer=timer)
                reasoned = {(r.first, r.second): _to_comparison(r, "reason") for r in results}
                disagree = sum(1 for c in comparisons if (c.first, c.second) in reasoned
                               and reasoned[(c.first, c.second)].answer not in (None, c.answer))
                timer.count("hybrid_reasoned", len(reasoned))
                timer.count("hybrid_disagreements", disagree)
                comparisons += list(reasoned.values())
        stats = dict(selection_local.stats)
        stats.update(timer.counters)
        stats["seconds"] = {**{k: round(v, 6) for k, v in timer.seconds.items()},
                            "total": round(time.perf_counter() - t_start, 6)}
        stats.update({"mode": mode, "backend": self.backend, "device": self.device,
                      "prefix_cache_entries": len(self._prefix_cache), "prefix_cache_bytes": self._prefix_cache.nbytes})
        return _to_input_indices(selection_local, comparisons, unique, duplicates, rejected, stats)

    # -- helpers ---------------------------------------------------------------------------------------
    def _check_profile_tokens(self, profile: Profile) -> None:
        """Profile text must not smuggle in the model's special tokens (they would break the prompt's structure)."""
        specials = self._core.tokenizer.special_tokens
        for name, text in (("title", profile.title), ("extra", profile.extra), ("queries", " ".join(profile.queries))):
            for s in specials:
                if s in text:
                    raise ProfileError(f"profile.{name} contains the model's special token {s!r}")

    def _load_candidates(self, images: Sequence[Any], strict: bool, timer) -> tuple[dict, dict[int, str]]:
        t0 = time.perf_counter()
        loaded, rejected = {}, {}
        for i, obj in enumerate(images):
            try:
                im = self._core.load_images([obj])[0]
                self._core.grid_of(im)  # aspect ratios Qwen cannot handle are rejected here
            except InvalidImageError as exc:
                if strict:
                    raise InvalidImageError(f"candidate #{i}: {exc}") from exc
                rejected[i] = str(exc)
                continue
            except C4UError as exc:  # e.g. an unsupported object type: same policy
                if strict:
                    raise
                rejected[i] = str(exc)
                continue
            loaded[i] = im
        timer.add_time("load_images", t0)
        return loaded, rejected


def _profile(profile: Any) -> Profile:
    return Profile.coerce(profile)


def _check_mode(mode: str, allow_hybrid: bool) -> None:
    valid = ("fast", "reason", "hybrid") if allow_hybrid else ("fast", "reason")
    if mode not in valid:
        raise InvalidInputError(f"unknown mode {mode!r}; valid modes: {', '.join(valid)}")


def _check_max_new_tokens(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"max_new_tokens must be a positive int, got {n!r}")


def _deduplicate(loaded: dict) -> tuple[list[int], dict[int, int]]:
    """Unique input indices (first occurrence of each image content) and duplicate -> original."""
    first_of: dict[str, int] = {}
    unique, duplicates = [], {}
    for i, im in loaded.items():
        if im.content_hash in first_of:
            duplicates[i] = first_of[im.content_hash]
        else:
            first_of[im.content_hash] = i
            unique.append(i)
    return unique, duplicates


def _to_comparison(res, mode: str) -> Comparison:
    return Comparison(first=res.first, second=res.second, answer=res.answer, prob_a=res.prob_a,
                      reasoning=res.reasoning, mode=mode, error=res.error, raw_text=res.raw_text)


def _to_input_indices(local: Selection, comparisons: list[Comparison], unique: list[int], duplicates: dict[int, int],
                      rejected: dict[int, str], stats: dict) -> Selection:
    """Map a selection over unique candidates 0..k-1 back to input indices; duplicates rank beside their original."""
    ranking: list[int] = []
    dups_of: dict[int, list[int]] = {}
    for d, orig in duplicates.items():
        dups_of.setdefault(orig, []).append(d)
    scores = {}
    for local_idx in local.ranking:
        orig = unique[local_idx]
        for idx in [orig, *sorted(dups_of.get(orig, []))]:
            ranking.append(idx)
            scores[idx] = local.scores[local_idx]
    return Selection(
        winner=unique[local.winner],
        ranking=ranking,
        scores=scores,
        comparisons=[c.remap(unique) for c in comparisons],
        rejected=dict(sorted(rejected.items())),
        duplicates=duplicates,
        stats=stats,
        deciding_pairs=[(unique[a], unique[b]) for a, b in local.deciding_pairs],
    )


# -- the built-in model --------------------------------------------------------------------------------
_DEFAULT_ENGINE: Engine | None = None
_DEFAULT_LOCK = threading.Lock()


def default_engine() -> Engine:
    """The built-in model, loaded once (lazily, thread-safe)."""
    global _DEFAULT_ENGINE
    with _DEFAULT_LOCK:
        if _DEFAULT_ENGINE is None:
            from c4u_engine.builtin import builtin_model_dir

            _DEFAULT_ENGINE = Engine(builtin_model_dir())
        return _DEFAULT_ENGINE


def select(images: Sequence[Any], profile: Any, **options: Any) -> Selection:
    """Select among candidate creatives with the built-in model. Options as Engine.select."""
    return default_engine().select(images, profile, **options)
