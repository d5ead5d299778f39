"""Running a batch of comparisons (A, B) with exact prefix reuse.

Every comparison prompt is [prefix][image A][rest: middle text, image B, question, assistant prefix]. The prefix KV is
computed once (and kept across requests in the prefix cache); [prefix + A] once per distinct A, all missing ones in
one batched pass; then every comparison starts from its [prefix + A] KV and computes only `rest`, all comparisons of
the batch together (padded when image grids differ; the attention mask hides the padding). Reason mode then decodes
all rows together until each has written </answer>.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from c4u_engine.engine.answer import parse_answer, prob_a_from_logits
from c4u_engine.engine.generation import decode
from c4u_engine.engine.model_engine import ModelEngine, Prompt, StageTimer
from c4u_engine.engine.prefix_cache import PrefixCache, PrefixEntry, make_key
from c4u_engine.engine.prompt import PromptTemplate
from c4u_engine.engine.sampling import Sampler, SamplingParams
from c4u_engine.errors import ModelFormatError
from c4u_engine.imaging import LoadedImage
from c4u_engine.profile import Profile


def empty_thinking_ids(tokenizer, reason_prefix: str) -> tuple[int, ...]:
    """The token that closes the thinking right after reason_prefix (empty when "</think>" merges with it)."""
    base = tokenizer.encode(reason_prefix)
    closed = tokenizer.encode(reason_prefix + "</think>")
    if closed[: len(base)] != base or len(closed) <= len(base):
        return ()
    return (closed[len(base)],)


@dataclass
class PairResult:
    first: int
    second: int
    prob_a: float
    answer: str | None
    reasoning: str | None = None
    raw_text: str | None = None
    error: str | None = None


@dataclass
class _Split:
    """Where a comparison prompt's spans end: [0, prefix_end) prefix, [prefix_end, a_end) image A span."""

    prompt: Prompt
    prefix_end: int
    a_end: int


class ComparisonRunner:
    def __init__(self, engine: ModelEngine, template: PromptTemplate, prefix_cache: PrefixCache,
                 max_batch_rows: int = 64) -> None:
        self.engine = engine
        self.template = template
        self.prefix_cache = prefix_cache
        self.max_batch_rows = max_batch_rows
        self._answer_ids: tuple[int, int] | None = None
        self.fast_prefix = template.fast_prefix  # cut to the answer-token boundary by answer_token_ids()
        self.answer_cue = "<answer>"

    # -- prompts ---------------------------------------------------------------------------------------
    def messages(self, profile: Profile, image_a: object, image_b: object, mode: str) -> tuple[list[dict], str]:
        return self.template.messages(profile, image_a, image_b), self.assistant_prefix(mode)

    def answer_token_ids(self) -> tuple[int, int]:
        """Ids of the answer letters as the model emits them right after the fast-mode assistant prefix.

        Byte-level BPE may merge the prefix's last characters with the letter (Qwen's split rule makes ">A" one
        piece), so the ids are read where encode(prefix + "A") and encode(prefix + "B") part ways; the prefix is
        then cut to end exactly there (`fast_prefix`), which keeps prompt and answer tokens as the model emits them.
        """
        if self._answer_ids is None:
            tok, t = self.engine.tokenizer, self.template
            base = self.engine.render([{"role": "user", "content": "x"}], t.fast_prefix)
            ta, tb = tok.encode(base + t.answer_a), tok.encode(base + t.answer_b)
            common = 0
            while common < min(len(ta), len(tb)) and ta[common] == tb[common]:
                common += 1
            if len(ta) != common + 1 or len(tb) != common + 1:
                raise ModelFormatError(
                    f"answers {t.answer_a!r}/{t.answer_b!r} are not single tokens after the prefix "
                    f"{t.fast_prefix!r} with this tokenizer; fast mode needs single-token answers"
                )
            merged = tok.decode([ta[-1]])  # e.g. "A", or ">A" when the prefix's ">" merged into it
            if not merged.endswith(t.answer_a) or not t.fast_prefix.endswith(merged[: -len(t.answer_a)]):
                raise ModelFormatError(f"cannot align answer token {merged!r} with the prefix {t.fast_prefix!r}")
            cut = len(merged) - len(t.answer_a)
            self.fast_prefix = t.fast_prefix[: len(t.fast_prefix) - cut]
            self.answer_cue = self.fast_prefix.rsplit("</think>", 1)[-1] or self.fast_prefix
            self._answer_ids = (ta[-1], tb[-1])
        return self._answer_ids

    def empty_thinking_ids(self) -> tuple[int, ...]:
        """The token that would close the thinking right after the reason prefix. Reason mode bans it as the first
        new token: a model taught both a chain-of-thought and a direct-answer form (ours is, for fast mode) must
        reason when asked to."""
        return empty_thinking_ids(self.engine.tokenizer, self.template.reason_prefix)

    def assistant_prefix(self, mode: str) -> str:
        self.answer_token_ids()
        return self.fast_prefix if mode == "fast" else self.template.assistant_prefix(mode)

    def _split(self, profile: Profile, a: LoadedImage, b: LoadedImage, mode: str) -> _Split:
        messages, prefix = self.messages(profile, a, b, mode)
        prompt = self.engine.tokenize(messages, prefix, images=[a, b])
        tok = self.engine.tokenizer
        starts = np.flatnonzero(prompt.ids == tok.vision_start_id)
        ends = np.flatnonzero(prompt.ids == tok.vision_end_id)
        if len(starts) != 2 or len(ends) != 2:
            raise ModelFormatError("the comparison prompt must hold exactly two images (check the prompt template)")
        return _Split(prompt, int(starts[0]), int(ends[0]) + 1)

    # -- the batch -------------------------------------------------------------------------------------
    def run(self, profile: Profile, images: Sequence[LoadedImage], embeds: Sequence, pairs: Sequence[tuple[int, int]],
            mode: str, *, max_new_tokens: int = 256, sampling: SamplingParams | None = None,
            use_cache: bool = True, timer: StageTimer | None = None) -> list[PairResult]:
        """Judge each ordered pair (i, j) of `images` (i shown as Creative A). embeds[i] are image i's embeddings."""
        timer = timer or StageTimer()
        t0 = time.perf_counter()
        splits = [self._split(profile, images[i], images[j], mode) for i, j in pairs]
        timer.add_time("tokenize", t0)
        for s in splits:
            self.engine.check_context(len(s.prompt.ids), max_new_tokens if mode != "fast" else 0)
        local: dict = {}  # request-local reuse, also when the cross-request cache is off
        results: list[PairResult] = []
        for lo in range(0, len(pairs), self.max_batch_rows):
            chunk = list(range(lo, min(lo + self.max_batch_rows, len(pairs))))
            entries = self._prefix_a_entries([splits[k] for k in chunk], [pairs[k][0] for k in chunk], embeds,
                                             use_cache, local, timer)
            results += self._judge(chunk, splits, pairs, entries, embeds, mode, max_new_tokens, sampling, timer)
        return results

    def _cached(self, key, use_cache: bool, local: dict, timer: StageTimer):
        entry = local.get(key)
        if entry is None and use_cache:
            entry = self.prefix_cache.get(key)
            if entry is not None:
                timer.count("prefix_cache_hits")
        return entry

    def _store(self, entry: PrefixEntry, use_cache: bool, local: dict) -> None:
        local[entry.key] = entry
        if use_cache:
            self.prefix_cache.put(entry)

    def _prefix_a_entries(self, splits: list[_Split], a_index: list[int], embeds, use_cache, local, timer):
        """[prefix + A] KV for each split, computing the prefix and every missing A (batched) as needed."""
        runner = self.engine.runner
        s0 = splits[0]
        pkey = make_key(s0.prompt.ids[: s0.prefix_end], [])
        prefix = self._cached(pkey, use_cache, local, timer)
        if prefix is None:
            t0 = time.perf_counter()
            n = s0.prefix_end
            emb = runner.embed(s0.prompt.ids[None, :n], [])
            _, kv = runner.forward(emb, s0.prompt.positions[:, None, :n], None, np.ones((1, n), bool),
                                   np.zeros((1, 1), np.int64))
            prefix = PrefixEntry(pkey, kv, int(s0.prompt.positions[:, n - 1].max()))
            self._store(prefix, use_cache, local)
            timer.add_time("prefill_prefix", t0)
            timer.count("tokens_prefilled", n)
        keys, missing = [], {}
        for s, ai in zip(splits, a_index):
            if tuple(s.prompt.ids[: s.prefix_end]) != pkey.token_ids:
                raise ModelFormatError("comparison prompts of one request must share their prefix")
            im = s.prompt.images[0]
            key = make_key(s.prompt.ids[: s.a_end], [(im.content_hash, tuple(s.prompt.grids[0]))])
            keys.append(key)
            if key not in missing and self._cached(key, use_cache, local, timer) is None:
                missing[key] = (s, ai)
        if missing:
            t0 = time.perf_counter()
            todo = list(missing.values())
            n = len(prefix.key.token_ids)
            lens = [s.a_end - n for s, _ in todo]
            width = max(lens)
            ids = np.full((len(todo), width), self.engine.tokenizer.im_end_id, np.int64)  # padding, masked
            pos = np.zeros((3, len(todo), width), np.int64)
            mask = np.zeros((len(todo), n + width), bool)
            mask[:, :n] = True
            for r, (s, _) in enumerate(todo):
                ids[r, : lens[r]] = s.prompt.ids[n : s.a_end]
                pos[:, r, : lens[r]] = s.prompt.positions[:, n : s.a_end]
                mask[r, n : n + lens[r]] = True
            emb = runner.embed(ids, [embeds[ai] for _, ai in todo])
            past = runner.kv_select(prefix.kv, [0] * len(todo))
            _, kv = runner.forward(emb, pos, past, mask, np.zeros((len(todo), 1), np.int64))
            for r, key in enumerate(missing):
                s = todo[r][0]
                entry = PrefixEntry(key, runner.kv_select(kv, [r], length=s.a_end),
                                    int(s.prompt.positions[:, s.a_end - 1].max()))
                self._store(entry, use_cache, local)
            timer.add_time("prefill_image_a", t0)
            timer.count("tokens_prefilled", sum(lens))
        return [self._cached(k, use_cache, local, timer) for k in keys]

    def _judge(self, chunk, splits, pairs, entries, embeds, mode, max_new_tokens, sampling, timer):
        runner, tok = self.engine.runner, self.engine.tokenizer
        t0 = time.perf_counter()
        rows = len(chunk)
        past_lens = [s.a_end for s in (splits[k] for k in chunk)]
        new_lens = [len(splits[k].prompt.ids) - splits[k].a_end for k in chunk]
        p_max, s_max = max(past_lens), max(new_lens)
        ids = np.full((rows, s_max), tok.im_end_id, np.int64)  # padding: any non-image token; masked out anyway
        pos = np.zeros((3, rows, s_max), np.int64)
        mask = np.zeros((rows, p_max + s_max), bool)
        for r, k in enumerate(chunk):
            s = splits[k]
            ids[r, : new_lens[r]] = s.prompt.ids[s.a_end :]
            pos[:, r, : new_lens[r]] = s.prompt.positions[:, s.a_end :]
            mask[r, : past_lens[r]] = True
            mask[r, p_max : p_max + new_lens[r]] = True
        emb = runner.embed(ids, [embeds[pairs[k][1]] for k in chunk])
        reserve = 0 if mode == "fast" else max_new_tokens  # decoding appends in place
        past = runner.kv_stack([e.kv for e in entries], p_max, reserve=s_max + reserve)
        logits, kv = runner.forward(emb, pos, past, mask, np.array([[n - 1] for n in new_lens], np.int64))
        timer.add_time("prefill_comparisons", t0)
        timer.count("tokens_prefilled", sum(new_lens))
        timer.count("comparisons", rows)
        id_a, id_b = self.answer_token_ids()
        if mode == "fast":
            out = []
            for r, k in enumerate(chunk):
                p = prob_a_from_logits(logits[r, 0], id_a, id_b)
                out.append(PairResult(pairs[k][0], pairs[k][1], p, "A" if p >= 0.5 else "B"))
            return out
        return self._reason(chunk, splits, pairs, logits[:, 0], kv, mask, max_new_tokens, sampling, timer)

    def _reason(self, chunk, splits, pairs, logits, kv, mask, max_new_tokens, sampling, timer):
        tok = self.engine.tokenizer
        t0 = time.perf_counter()
        id_a, id_b = self.answer_token_ids()
        answer_probs: dict[int, float] = {}

        def before_sample(row: int, generated: list[int], row_logits: np.ndarray) -> None:
            # the logits right after "<answer>" are the answer logits: read P(A) there, as fast mode does
            if row not in answer_probs and generated and tok.decode(generated[-4:]).rstrip().endswith(self.answer_cue):
                answer_probs[row] = prob_a_from_logits(row_logits, id_a, id_b)

        def stop(row: int, generated: list[int]) -> bool:
            return "</answer>" in tok.decode(generated[-6:])

        next_pos = np.array([splits[k].prompt.next_position for k in chunk], np.int64)
        res = decode(self.engine.runner, kv, mask, logits, next_pos, max_new_tokens=max_new_tokens,
                     sampler=Sampler(sampling or SamplingParams()), eos_ids=tok.eos_token_ids, stop=stop,
                     before_sample=before_sample, suppress_first=self.empty_thinking_ids())
        timer.add_time("decode", t0)
        timer.count("tokens_decoded", res.tokens_decoded)
        timer.count("decode_steps", res.steps)
        out = []
        for r, k in enumerate(chunk):
            text = self.template.reason_prefix + tok.decode(res.tokens[r], skip_special_tokens=True)
            answer, reasoning, error = parse_answer(text)
            if r in answer_probs:
                prob = answer_probs[r]
            elif answer is not None:
                prob = 1.0 if answer == "A" else 0.0
            else:
                prob = 0.5
            if error and res.finished_by[r] == "length":
                error += f" (stopped at max_new_tokens={max_new_tokens})"
            out.append(PairResult(pairs[k][0], pairs[k][1], prob, answer, reasoning, text, error))
        return out
