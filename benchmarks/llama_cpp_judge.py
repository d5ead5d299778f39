"""The judge on llama.cpp (llama-cpp-python's low-level `llama_cpp` and `mtmd_cpp` bindings), driven two ways.

whole prompt per pair: what llama-cpp-python's multimodal chat handlers do on every call: clear the KV, tokenize the
    whole prompt with its images (mtmd_tokenize), encode both images and evaluate every chunk
    (mtmd_helper_eval_chunks), read the last logits. (The handlers themselves render their own chat template and
    clear the KV on each call, so calling them would judge a different prompt no faster; this is their work on our
    exact prompt text.)
reuse: the best the low-level API allows. Each image is encoded once per selection (mtmd_encode_chunk, embeddings
    copied out); [prefix] (system turn, profile, "Creative A:") is evaluated once into sequence 0; per image A,
    sequence 0 is forked (llama_memory_seq_cp: the unified KV cache shares the cells) and A's embeddings evaluated
    once; per pair only "...Creative B:", B's embeddings and the tail are evaluated, and the KV is cut back with
    llama_memory_seq_rm. `batched`: the 7 pairs of one A run as 7 sequences of one llama_process call (forks of
    [prefix + A]), and reasoning decodes them as one batch per step; otherwise one pair at a time on one sequence.

Reasoning generates a given number of tokens per pair greedily (argmax; end-of-generation tokens do not stop it),
so both engines do the same amount of decoding.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"  # what the chat template writes per image


class LlamaCppError(RuntimeError):
    """A llama.cpp call failed (names the call and its return code)."""


@dataclass
class _Image:
    """One image tokenized on its own: its chunk (geometry, decoder positions) and, once encoded, its embeddings."""

    chunks: object  # mtmd_input_chunks owning `chunk`
    chunk: object
    n_tokens: int
    n_pos: int
    embd: np.ndarray | None = None


@dataclass
class PromptParts:
    """The comparison prompt split at its two images: text before A, between A and B, after B (token ids)."""

    head: list[int]
    middle: list[int]
    tail: list[int]


def _noop_log(level, text, user_data):  # llama.cpp logs every decode at INFO level otherwise
    return None


class LlamaCppJudge:
    """A text model + mmproj GGUF pair loaded with the low-level API; one context with `n_seq` sequences."""

    def __init__(self, model_path: str | Path, mmproj_path: str | Path, *, threads: int, n_ctx: int = 4096,
                 n_seq: int = 8, n_batch: int = 2048, kv_unified: bool = True, quiet: bool = True) -> None:
        import llama_cpp as L
        from llama_cpp import mtmd_cpp as M

        self.L, self.M = L, M
        if quiet:
            self._log_cb = L.llama_log_callback(_noop_log)  # kept alive: llama.cpp holds the pointer
            L.llama_log_set(self._log_cb, None)
            M.mtmd_helper_log_set(self._log_cb, None)
        L.llama_backend_init()
        mparams = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(str(model_path).encode(), mparams)
        if not self.model:
            raise LlamaCppError(f"llama_model_load_from_file failed for {model_path}")
        cparams = L.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = n_ctx, n_batch, n_batch, n_seq
        cparams.n_threads = cparams.n_threads_batch = threads
        # unified: forks of one prefix share cells, every sequence may use the whole context, and attention
        # runs over all cells (masked); otherwise each sequence has its own n_ctx / n_seq cells and a fork copies
        cparams.kv_unified = kv_unified
        cparams.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise LlamaCppError("llama_init_from_model failed")
        self.mem = L.llama_get_memory(self.ctx)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_embd = L.llama_model_n_embd_inp(self.model)
        self.n_batch, self.n_seq = n_batch, n_seq
        mtmd_params = M.mtmd_context_params_default()
        mtmd_params.use_gpu = False
        mtmd_params.print_timings = False
        mtmd_params.n_threads = threads
        self.mctx = M.mtmd_init_from_file(str(mmproj_path).encode(), self.model, mtmd_params)
        if not self.mctx:
            raise LlamaCppError(f"mtmd_init_from_file failed for {mmproj_path}")
        self.marker = M.mtmd_default_marker().decode()
        self.batch = L.llama_batch_ext_init(self.ctx)

    def close(self) -> None:
        L, M = self.L, self.M
        for name, free in (("batch", L.llama_batch_ext_free), ("mctx", M.mtmd_free), ("ctx", L.llama_free),
                           ("model", L.llama_model_free)):  # in this order: each depends on the ones after it
            handle = getattr(self, name, None)
            if handle:
                free(handle)
                setattr(self, name, None)

    # -- tokenizing ------------------------------------------------------------------------------------
    def _bitmap(self, image: np.ndarray):
        image = np.ascontiguousarray(image, dtype=np.uint8)
        h, w = image.shape[:2]
        data = (ctypes.c_uint8 * image.size).from_buffer_copy(image.tobytes())
        bitmap = self.M.mtmd_bitmap_init(w, h, data)
        if not bitmap:
            raise LlamaCppError("mtmd_bitmap_init failed")
        return bitmap

    def _tokenize(self, text: str, images: Sequence[np.ndarray]):
        """mtmd_input_chunks for `text` (one marker per image); the caller frees them."""
        M = self.M
        bitmaps = [self._bitmap(im) for im in images]
        try:
            raw = text.encode()
            inp = M.mtmd_input_text(text=raw, text_len=len(raw), add_special=False, parse_special=True)
            arr = (M.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            chunks = M.mtmd_input_chunks_init()
            rc = M.mtmd_tokenize(self.mctx, chunks, ctypes.byref(inp), arr, len(bitmaps))
            if rc != 0:
                M.mtmd_input_chunks_free(chunks)
                raise LlamaCppError(f"mtmd_tokenize returned {rc}")
            return chunks
        finally:
            for b in bitmaps:
                M.mtmd_bitmap_free(b)

    def _chunk_list(self, chunks) -> list[tuple[str, object]]:
        """[(kind, payload)]: ("text", [ids]) or ("image", chunk)."""
        M = self.M
        out = []
        for i in range(M.mtmd_input_chunks_size(chunks)):
            chunk = M.mtmd_input_chunks_get(chunks, i)
            if M.mtmd_input_chunk_get_type(chunk) == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                ptr = M.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                out.append(("text", [ptr[k] for k in range(n.value)]))
            else:
                out.append(("image", chunk))
        return out

    def prompt_text(self, rendered: str) -> str:
        """The engine's rendered prompt with each image placeholder replaced by mtmd's marker (mtmd writes
        <|vision_start|>/<|vision_end|> around the embeddings itself for Qwen2.5-VL)."""
        if rendered.count(IMAGE_PLACEHOLDER) != 2:
            raise ValueError(f"expected two {IMAGE_PLACEHOLDER} in the prompt, got {rendered.count(IMAGE_PLACEHOLDER)}")
        return rendered.replace(IMAGE_PLACEHOLDER, self.marker)

    def token_view(self, text: str, images: Sequence[np.ndarray], image_pad_id: int) -> list[int]:
        """The prompt's token ids as llama.cpp sees them, each image's embeddings written as n x image_pad_id
        (comparable with the engine's expanded prompt ids)."""
        chunks = self._tokenize(text, images)
        try:
            ids: list[int] = []
            for kind, payload in self._chunk_list(chunks):
                ids += payload if kind == "text" else [image_pad_id] * self.M.mtmd_input_chunk_get_n_tokens(payload)
            return ids
        finally:
            self.M.mtmd_input_chunks_free(chunks)

    def split_prompt(self, text: str, sample_images: Sequence[np.ndarray]) -> PromptParts:
        """The text parts around the two images (the same for every pair: only the images change)."""
        chunks = self._tokenize(text, sample_images)
        try:
            parts = self._chunk_list(chunks)
        finally:
            self.M.mtmd_input_chunks_free(chunks)
        kinds = [k for k, _ in parts]
        if kinds != ["text", "image", "text", "image", "text"]:
            raise LlamaCppError(f"unexpected chunk layout {kinds}")
        return PromptParts(parts[0][1], parts[2][1], parts[4][1])

    # -- whole prompt per pair (what the chat handlers do) ----------------------------------------------
    def whole_prompt(self, text: str, image_a: np.ndarray, image_b: np.ndarray, gen_tokens: int = 0,
                     ban_first: Sequence[int] = ()) -> tuple[np.ndarray, list[int]]:
        """Clear the KV, evaluate the whole prompt (both images encoded), then generate `gen_tokens` greedily
        (`ban_first`: ids the first generated token may not be). Returns (logits after the prompt, generated ids)."""
        L, M = self.L, self.M
        L.llama_memory_clear(self.mem, True)
        chunks = self._tokenize(text, [image_a, image_b])
        try:
            n_past = L.llama_pos(0)
            rc = M.mtmd_helper_eval_chunks(self.mctx, self.ctx, chunks, 0, 0, self.n_batch, True,
                                           ctypes.byref(n_past))
            if rc != 0:
                raise LlamaCppError(f"mtmd_helper_eval_chunks returned {rc}")
        finally:
            M.mtmd_input_chunks_free(chunks)
        logits = self._logits(-1)
        generated = self._generate_batch([0], [n_past.value], [logits], [gen_tokens], ban_first)[0]
        return logits, generated

    # -- reuse ------------------------------------------------------------------------------------------
    def encode_images(self, images: Sequence[np.ndarray]) -> list[_Image]:
        """Each image through the vision encoder once; embeddings copied out of mtmd's buffer."""
        M = self.M
        out = []
        for image in images:
            chunks = self._tokenize(self.marker, [image])
            parts = self._chunk_list(chunks)
            chunk = next(c for kind, c in parts if kind == "image")
            rc = M.mtmd_encode_chunk(self.mctx, chunk)
            if rc != 0:
                M.mtmd_input_chunks_free(chunks)
                raise LlamaCppError(f"mtmd_encode_chunk returned {rc}")
            n = M.mtmd_input_chunk_get_n_tokens(chunk)
            embd = np.ctypeslib.as_array(M.mtmd_get_output_embd(self.mctx), shape=(n * self.n_embd,))
            out.append(_Image(chunks, chunk, n, M.mtmd_input_chunk_get_n_pos(chunk),
                              embd.reshape(n, self.n_embd).copy()))
        return out

    def free_images(self, images: Sequence[_Image]) -> None:
        for im in images:
            self.M.mtmd_input_chunks_free(im.chunks)

    def reuse_selection(self, parts: PromptParts, images: list[_Image], pairs: Sequence[tuple[int, int]], *,
                        batched: bool, gen_tokens: dict[tuple[int, int], int] | None = None,
                        ban_first: Sequence[int] = ()) -> dict[tuple[int, int], tuple[np.ndarray, list[int]]]:
        """{(a, b): (logits after the prompt, generated ids)} for `pairs` of already encoded `images`."""
        L = self.L
        gen_tokens = gen_tokens or {}
        by_a: dict[int, list[int]] = {}
        for a, b in pairs:
            by_a.setdefault(a, []).append(b)
        most = max(len(bs) for bs in by_a.values())
        if batched and most + 2 > self.n_seq:  # [prefix], [prefix + A] and one sequence per B
            raise ValueError(f"batched reuse of {most} pairs per image A needs n_seq >= {most + 2}, got {self.n_seq}")
        L.llama_memory_clear(self.mem, True)
        self._decode_rows([(0, ("text", t), p, False) for p, t in enumerate(parts.head)])
        prefix_end = len(parts.head)
        out = {}
        for a, bs in by_a.items():
            seq_a = 1 if batched else 0
            if batched:
                L.llama_memory_seq_cp(self.mem, 0, seq_a, -1, -1)
            after_a = self._decode_image(seq_a, images[a], prefix_end)
            if batched:
                seqs = list(range(2, 2 + len(bs)))
                for s in seqs:
                    L.llama_memory_seq_cp(self.mem, seq_a, s, -1, -1)
                runs, ends = [[], [], []], []
                for s, b in zip(seqs, bs):
                    suffix, end = self._suffix_runs(s, parts, images[b], after_a)
                    for run, part in zip(runs, suffix):
                        run += part
                    ends.append(end)
                logits = [self._logits(i) for i in self._decode_rows(runs[0] + runs[1] + runs[2])]
                generated = self._generate_batch(seqs, ends, logits, [gen_tokens.get((a, b), 0) for b in bs],
                                                 ban_first)
                for b, lg, g in zip(bs, logits, generated):
                    out[(a, b)] = (lg, g)
                for s in [seq_a, *seqs]:
                    L.llama_memory_seq_rm(self.mem, s, -1, -1)
            else:
                for b in bs:
                    runs, end = self._suffix_runs(0, parts, images[b], after_a)
                    (last,) = self._decode_rows(runs[0] + runs[1] + runs[2])
                    logits = self._logits(last)
                    generated = self._generate_batch([0], [end], [logits], [gen_tokens.get((a, b), 0)], ban_first)
                    out[(a, b)] = (logits, generated[0])
                    L.llama_memory_seq_rm(self.mem, 0, after_a, -1)
                L.llama_memory_seq_rm(self.mem, 0, prefix_end, -1)
        return out

    # -- building blocks ---------------------------------------------------------------------------------
    def _image_rows(self, seq: int, image: _Image, pos_0: int) -> tuple[list, int]:
        """Rows for one image's embeddings at M-RoPE positions from pos_0; returns (rows, the next text position)."""
        M = self.M
        tokens = M.mtmd_input_chunk_get_tokens_image(image.chunk)
        dec = (M.mtmd_decoder_pos * image.n_tokens)()
        M.mtmd_helper_image_get_decoder_pos(tokens, pos_0, dec)
        # section-major [t, y, x, z] per row, as mtmd-helper's decode_embd_batch::set_position_mrope_2d
        rows = [(seq, ("embd", image.embd[i]), (d.t, d.y, d.x, d.z), False) for i, d in enumerate(dec)]
        return rows, pos_0 + image.n_pos

    def _decode_image(self, seq: int, image: _Image, pos_0: int) -> int:
        rows, end = self._image_rows(seq, image, pos_0)
        self._decode_rows(rows)
        return end

    def _suffix_runs(self, seq: int, parts: PromptParts, image_b: _Image, pos_0: int) -> tuple[list, int]:
        """([middle rows, B's embedding rows, tail rows], the position after them): "...Creative B:", B and the
        tail on `seq` from pos_0, logits on the last row."""
        middle = [(seq, ("text", t), pos_0 + i, False) for i, t in enumerate(parts.middle)]
        image, pos = self._image_rows(seq, image_b, pos_0 + len(parts.middle))
        tail = [(seq, ("text", t), pos + i, i == len(parts.tail) - 1) for i, t in enumerate(parts.tail)]
        return [middle, image, tail], pos + len(parts.tail)

    def _decode_rows(self, rows: list) -> list[int]:
        """Evaluate rows (seq, ("text", id) | ("embd", vector), pos, output): one llama_process call per run of
        one kind (a batch holds token ids or embeddings, not both) and per n_batch rows. Returns the batch indices
        of the output rows, for llama_get_logits_ith; outputs must all fall in the last call (llama.cpp keeps the
        last call's logits only)."""
        L = self.L
        calls, start = [], 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i][1][0] != rows[start][1][0] or i - start == self.n_batch:
                calls.append(rows[start:i])
                start = i
        outputs: list[int] = []
        for c, call in enumerate(calls):
            L.llama_batch_ext_clear(self.batch)
            keep = []  # embedding arrays must live until llama_batch_ext_add_embd copied them
            for seq, (kind, value), pos, output in call:
                if kind == "text":
                    idx = L.llama_batch_ext_add_token(self.batch, seq, int(value))
                    p = (L.llama_pos * 1)(pos)
                else:
                    vec = np.ascontiguousarray(value, dtype=np.float32)
                    keep.append(vec)
                    e = L.llama_embd(vec.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), 1, vec.size)
                    idx = L.llama_batch_ext_add_embd(self.batch, seq, e)
                    p = (L.llama_pos * 4)(*pos)
                if idx < 0:
                    raise LlamaCppError(f"llama_batch_ext_add returned {idx}")
                L.llama_batch_ext_set_pos(self.batch, idx, p)
                if output:
                    if c != len(calls) - 1:
                        raise LlamaCppError("output rows must be in the last llama_process call")
                    L.llama_batch_ext_set_output_logits(self.batch, idx, True)
                    outputs.append(idx)
            rc = L.llama_process(self.ctx, L.LLAMA_PROCESS_TYPE_DECODE, self.batch)
            if rc != 0:
                raise LlamaCppError(f"llama_process returned {rc}")
        return outputs

    def _logits(self, i: int) -> np.ndarray:
        ptr = self.L.llama_get_logits_ith(self.ctx, i)
        if not ptr:
            raise LlamaCppError(f"llama_get_logits_ith({i}) returned NULL")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def _generate_batch(self, seqs: list[int], positions: list[int], logits: list[np.ndarray], counts: list[int],
                        ban_first: Sequence[int] = ()) -> list[list[int]]:
        """Greedy decoding, one llama_process per step over the sequences still generating; sequence k stops after
        counts[k] tokens; the first token is never one of `ban_first` (c4u's reason mode bans closing the
        thinking right away)."""
        out = [[] for _ in seqs]
        first = [lg.copy() for lg in logits]
        for lg in first:
            lg[list(ban_first)] = -np.inf
        nxt = [int(np.argmax(lg)) for lg in first]
        pos = list(positions)
        live = [k for k in range(len(seqs)) if counts[k] > 0]
        while live:
            for k in live:
                out[k].append(nxt[k])
            live = [k for k in live if len(out[k]) < counts[k]]
            if not live:
                break
            out_idx = self._decode_rows([(seqs[k], ("text", nxt[k]), pos[k], True) for k in live])
            for i, k in zip(out_idx, live):
                nxt[k] = int(np.argmax(self._logits(i)))
                pos[k] += 1
        return out
