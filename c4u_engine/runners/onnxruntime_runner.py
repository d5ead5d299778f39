"""The fast CPU runtime: the exported graphs (c4u export) on onnxruntime, with numpy everywhere. No torch.

Engine directory: a checkpoint's onnx/ subdirectory (onnx-int8/, onnx-int4/ for `precision="int8"|"int4"`) or
the directory itself (engine_dir.py validates it: manifest, files, digests, I/O contract, model type, precision).
Quantized engines (runners/precision.py) run here as they are: float I/O, int8 MatMulInteger / int4 MatMulNBits
inside the graph. KV caches are numpy arrays ([B, kv_heads, L, head_dim] per
layer), embeddings numpy arrays; the token embedding table is memory-mapped, so start-up reads only the rows used.

Providers: device "cpu" runs the CPU execution provider; "cuda[:N]" the CUDA EP (TensorRT EP first when this
onnxruntime has it, with the manifest's shape ranges as its profile), CPU EP as fallback. `providers` overrides
the list. intra_op_threads: $C4U_ORT_THREADS when set (the user's setting wins over the engine's plan for its
lanes), else the argument, else onnxruntime's choice of one per physical core. lone_threads: a second pair of
sessions on that many threads, for the calls the engine's lone check (set_lone_check) says run alone.
On CUDA the KV still lives in host numpy arrays (copied in and out every call): correct, not the fast GPU path.

Copies: session.run's outputs are used as they come (binding outputs to preallocated arrays with IOBinding was
measured slower on CPU: 8-layer model, batch 8, 800 past slots, decode 70 ms plain vs 150 ms bound); kv_select
is one numpy gather per tensor. KVs are exactly their length: `reserve` hints are not needed (no in-place appends).

Decode without copying the cache: the graph returns present = concat(past, new), a copy of every slot it is given
as past. A KV here is two segments, frozen then past (OrtKV); the decoder attends over both and returns only the
past segment grown (export/attention.py). A step hands over the cache it got from the last one as frozen (free: the
arrays are never written) and only the last FOLD_SLOTS or fewer slots are copied per step; when the past segment
reaches FOLD_SLOTS it is folded into the frozen one (one copy of the cache every FOLD_SLOTS steps). Engines exported
before the decoder took a frozen segment run as before (the whole cache as past).

Engines that claim batch invariance (int8 / int4 by default, `packed_decode` overrides) decode differently: through
kv_for_decode a decode batch's KV is a DecodeKV (runners/decode_kv.py), each row's live slots packed from slot 0 in
buffers with spare capacity, the whole buffer as the frozen segment and the step's token as the only new one,
appended in place (one copy per GROW_SLOTS steps), so a row decodes bit for bit the same whatever shares its batch.
The others keep the engine's layout and the fold above (2-5% cheaper in reasoning selections; their fused softmax
is not invariant anyway).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from c4u_engine.errors import BackendUnavailableError, EngineArtifactError, InvalidInputError
from c4u_engine.models.file_formats import read_safetensors_header
from c4u_engine.models.rope import image_token_count
from c4u_engine.models.vision_aux import check_grid_thw, vision_aux_arrays
from c4u_engine.runners.base import KV, Embeds, Runner, split_by_budget
from c4u_engine.runners.decode_kv import DecodeKV
from c4u_engine.runners.lone_choice import LoneChoice, call_work
from c4u_engine.runners.precision import normalize_precision
from c4u_engine.runners.engine_dir import (ORT_DTYPES, VISION_INPUTS, EngineDir, TensorSpec, check_graph_io,
                                           decoder_input_names, decoder_takes_frozen, load_engine_dir)

THREADS_ENV = "C4U_ORT_THREADS"
# Patches per vision call (whole images): attention cost is quadratic in it. Per image on the built-in model, 2 cores
# (benchmarks/bench_vision_groups.py): 112x112 creatives (64 patches) 0.64 ms at 128, 0.90 at 256, 0.96 at 512; with
# 512, merging requests made vision dearer per image than running them one at a time.
VISION_GROUP_PATCHES = 128
# Past slots a decode step copies at most before they are folded into the frozen segment: a step copies ~FOLD/2 slots
# on average and a fold the whole cache once per FOLD steps, about sqrt(2 x cache) apart for caches of 200-1000 slots.
FOLD_SLOTS = 32
_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16}
_DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
                  "bfloat16": "bfloat16", "bf16": "bfloat16"}


class OrtKV:
    """Per-layer K and V numpy arrays, each [batch, kv_heads, length, head_dim], C-contiguous: `keys` / `values` the
    past segment, `frozen_keys` / `frozen_values` (None: empty) the slots before it, never written (may be shared)."""

    __slots__ = ("keys", "values", "frozen_keys", "frozen_values")

    def __init__(self, keys: list[np.ndarray], values: list[np.ndarray], frozen_keys: list[np.ndarray] | None = None,
                 frozen_values: list[np.ndarray] | None = None) -> None:
        self.keys = keys
        self.values = values
        self.frozen_keys = frozen_keys
        self.frozen_values = frozen_values

    @classmethod
    def from_segments(cls, segments: list[tuple[list[np.ndarray], list[np.ndarray]]]) -> "OrtKV":
        """The inverse of segments(): one (keys, values) pair, or the frozen pair then the past pair."""
        return cls(*segments[-1], *(segments[0] if len(segments) == 2 else (None, None)))

    def segments(self) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
        """(keys, values) per segment in slot order: the frozen one when there is one, then past."""
        past = (self.keys, self.values)
        return [past] if self.frozen_keys is None else [(self.frozen_keys, self.frozen_values), past]

    @property
    def frozen_length(self) -> int:
        return 0 if self.frozen_keys is None else int(self.frozen_keys[0].shape[2])

    def joined(self) -> "OrtKV":
        """This KV as one segment (a copy when there is a frozen one)."""
        if self.frozen_keys is None:
            return self
        join = lambda parts: [np.concatenate(layer, axis=2) for layer in zip(*parts)]  # noqa: E731
        segments = self.segments()
        return OrtKV(join([k for k, _ in segments]), join([v for _, v in segments]))


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    runs_concurrently = True  # InferenceSession.run is thread-safe; per-call state lives in the call

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "cpu",
        dtype: str | None = None,
        precision: str | None = None,
        providers: Sequence[Any] | None = None,
        intra_op_threads: int | None = None,
        lone_threads: int | None = None,
        verify_hashes: bool = True,
        packed_decode: bool | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(f"the onnxruntime runtime needs onnxruntime: pip install onnxruntime "
                                          f"({exc})") from exc
        self._ort = ort
        wanted = normalize_precision(precision) if precision is not None else None
        self.engine_dir: EngineDir = load_engine_dir(model_dir, precision=wanted, verify_hashes=verify_hashes)
        if wanted is not None and self.engine_dir.precision.name != wanted:
            raise BackendUnavailableError(
                f"precision {wanted!r} asked for, but {self.engine_dir.path} has precision "
                f"{self.engine_dir.precision.name!r}; export one with c4u export CKPT --precision {wanted}")
        self.dtype = self._check_dtype(dtype)
        self.device = device
        cfg = self.engine_dir.config
        self.config = cfg
        self._set_model_facts(cfg)
        self._np_dtype = np.dtype(_NUMPY_DTYPES[self.dtype])
        self.providers = list(providers) if providers is not None else _default_providers(ort, device, self.engine_dir)
        self._options = _session_options(ort, intra_op_threads)
        self.intra_op_threads = self._options.intra_op_num_threads or None
        self._vision = self._session("vision")
        self._decoder = self._session("decoder")
        # lone_threads: a second pair of sessions on that many threads (every core) for calls that run alone, as
        # the engine's lone check says (set_lone_check): lanes give concurrent requests one core each, and without
        # these a request alone would run on one lane's share too (1.85x slower on a 40M checkpoint, issue 25).
        # Small calls run faster on one thread, so which set a lone call gets is measured (lone_choice).
        self.lone_threads = None
        self.lone_choice = LoneChoice()
        self._lone: tuple[Any, Any] | None = None
        self._lone_check: Callable[[], bool] | None = None
        if lone_threads and self.intra_op_threads and lone_threads > self.intra_op_threads \
                and not os.environ.get(THREADS_ENV):
            wide = _session_options(ort, lone_threads)
            self._lone = (self._session("vision", wide), self._session("decoder", wide))
            self.lone_threads = lone_threads
        self._takes_frozen = decoder_takes_frozen(self.engine_dir.graphs["decoder"])
        self._decoder_inputs = decoder_input_names(self.num_layers, self._takes_frozen)
        # decode batches' KV packed per row (kv_for_decode): what batch invariance needs, so the default for engines
        # that claim it; the others keep the engine's layout, 2-5% cheaper in reasoning (BENCHMARKS.md)
        wanted = self.engine_dir.batch_invariant if packed_decode is None else bool(packed_decode)
        self.packed_decode = wanted and self._takes_frozen
        self._table = _map_embeddings(self.engine_dir)
        self._empty_cache: dict[int, np.ndarray] = {}

    @property
    def precision(self) -> str:
        return self.engine_dir.precision.name

    # -- setup -----------------------------------------------------------------------------------------
    def _check_dtype(self, dtype: str | None) -> str:
        exported = self.engine_dir.dtype
        if dtype is not None and _DTYPE_ALIASES.get(str(dtype)) != exported:
            raise BackendUnavailableError(
                f"dtype {dtype!r} asked for, but {self.engine_dir.path} was exported in {exported}; pass dtype=None "
                f"or re-export with c4u export CKPT --dtype {dtype}")
        if exported not in _NUMPY_DTYPES:
            raise BackendUnavailableError(
                f"{self.engine_dir.path} holds {exported} graphs (meant for TensorRT); onnxruntime runs float32 or "
                f"float16 exports: c4u export CKPT --dtype float32 --out DIR")
        return exported

    def _session(self, graph: str, options: Any = None) -> Any:
        entry = self.engine_dir.graphs[graph]
        path = self.engine_dir.graph_path(graph)
        try:
            session = self._ort.InferenceSession(str(path), sess_options=options or self._options,
                                                 providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / NotImplemented types
            raise EngineArtifactError(f"{path}: onnxruntime could not load the graph with providers "
                                      f"{self.providers}: {exc}") from exc
        check_graph_io(self.engine_dir.path, entry, _specs(session.get_inputs()), _specs(session.get_outputs()))
        return session

    # -- vision ----------------------------------------------------------------------------------------
    def encode_images(self, pixel_values: np.ndarray, grid_thw: np.ndarray) -> list[Embeds]:
        grid = check_grid_thw(grid_thw, self.config.vision)
        pixels = np.ascontiguousarray(pixel_values, dtype=np.float32)
        patches = np.prod(grid, axis=1)
        expected = (int(patches.sum()), self.config.vision.patch_dim)
        if pixels.shape != expected:
            raise InvalidInputError(f"pixel_values must be [sum(t*h*w), patch_dim] = {list(expected)} for grids "
                                    f"{grid.tolist()}, got {list(pixels.shape)}")
        # Images never attend to each other, but one graph call computes scores over all its patches at once
        # ([heads, P, P]): calls over groups of at most VISION_GROUP_PATCHES patches keep that quadratic term
        # per image instead of per batch. Same results; less memory and work.
        outputs, start = [], 0
        for group in split_by_budget(patches, VISION_GROUP_PATCHES):
            aux = vision_aux_arrays(grid[group], self.config)
            stop = start + int(patches[group].sum())
            feeds = {"pixel_patches": pixels[start:stop], **{n: getattr(aux, n) for n in VISION_INPUTS[1:]}}
            outputs.append(self._run(0, feeds)[0])
            start = stop
        out = outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        sizes = image_token_count(grid, self.config.vision.spatial_merge_size)
        return np.split(out, np.cumsum(sizes)[:-1])  # views of one block, as torch.split gives

    def embed(self, input_ids: np.ndarray, image_embeds: Sequence[Embeds]) -> Embeds:
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise InvalidInputError(f"input_ids must be an integer [B, S] array, got {ids.dtype} {list(ids.shape)}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise InvalidInputError(f"token ids must lie in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}")
        embeds = np.take(self._table, ids, axis=0)  # a fresh [B, S, H] array
        if len(image_embeds):
            flat = image_embeds[0] if len(image_embeds) == 1 else np.concatenate(image_embeds, axis=0)
            mask = ids == self.image_token_id
            n = int(mask.sum())
            if n != flat.shape[0]:
                raise InvalidInputError(f"{n} image-pad tokens but {flat.shape[0]} image embeddings")
            embeds[mask] = flat  # row-major order, as masked_scatter fills
        return embeds

    # -- decoder ---------------------------------------------------------------------------------------
    def _forward(self, embeds, position_ids, past, attention_mask, logits_index, reserve: int = 0):
        # reserve (spare slots for in-place appends) is a hint this runtime does not need: the graph returns
        # present = concat(past, new) as fresh arrays, so a past KV in the engine's layout is never written and may
        # stay shared; a decode KV grows in place, where only its newest owner writes (runners/decode_kv.py).
        embeds = np.ascontiguousarray(embeds, dtype=self._np_dtype)
        if embeds.ndim != 3 or embeds.shape[2] != self.hidden_size:
            raise InvalidInputError(f"embeds must be [B, S, {self.hidden_size}], got {list(embeds.shape)}")
        b, s, _ = embeds.shape
        p = 0 if past is None else self.kv_length(past)
        feeds = {
            "inputs_embeds": embeds,
            "position_ids": np.ascontiguousarray(position_ids, dtype=np.int64),
            "attention_mask": np.ascontiguousarray(attention_mask, dtype=bool),
            "logits_index": np.ascontiguousarray(logits_index, dtype=np.int64),
        }
        for name, shape in (("position_ids", (3, b, s)), ("attention_mask", (b, p + s))):
            if feeds[name].shape != shape:
                raise InvalidInputError(f"{name} must be {list(shape)}, got {list(feeds[name].shape)}")
        index = feeds["logits_index"]
        if index.ndim != 2 or index.shape[0] != b or (index.size and (index.min() < 0 or index.max() >= s)):
            raise InvalidInputError(f"logits_index must be [{b}, K] with values in [0, {s}), got {index.tolist()}")
        empty = [self._empty(b)] * self.num_layers
        if past is not None and past.keys[0].shape[0] != b:
            raise InvalidInputError(f"past KV has batch {past.keys[0].shape[0]}, embeds batch {b}")
        packed = past if isinstance(past, DecodeKV) else None
        if packed is not None:  # a decode batch's KV (runners/decode_kv.py): the packed cache as the frozen segment
            if s != 1:
                raise InvalidInputError("a decode KV takes one new token per row and call")
            packed.check_engine_mask(feeds["attention_mask"])
            feeds["attention_mask"] = packed.attention_mask()
            past = OrtKV(empty, empty, packed.keys, packed.values)
        elif past is None:
            past = OrtKV(empty, empty)
        elif self._takes_frozen and (past.frozen_keys is None or past.keys[0].shape[2] >= FOLD_SLOTS):
            # the whole cache becomes frozen: free when there is no frozen segment yet, else one copy
            whole = past.joined()
            past = OrtKV(empty, empty, whole.keys, whole.values)
        caches = [t for pair in zip(past.keys, past.values) for t in pair]
        if self._takes_frozen:
            frozen = (empty, empty) if past.frozen_keys is None else (past.frozen_keys, past.frozen_values)
            caches += [t for pair in zip(*frozen) for t in pair]
        feeds.update(zip(self._decoder_inputs[4:], caches))
        outputs = self._run(1, feeds)
        if packed is not None:  # the step's token, written after each row's live slots
            return outputs[0], packed.appended(outputs[1::2], outputs[2::2])
        return outputs[0], OrtKV(outputs[1::2], outputs[2::2], past.frozen_keys, past.frozen_values)

    def _run(self, graph: int, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Graph 0 (vision) or 1 (decoder) on the lane's sessions; when this call is alone, on the lone (all-core)
        ones or the lane's, whichever runs calls of its size faster (runners/lone_choice.py)."""
        lane = (self._vision, self._decoder)[graph]
        if self._lone is None or self._lone_check is None or not self._lone_check():
            return lane.run(None, feeds)
        work = call_work(graph, feeds)
        key = (graph, work.bit_length())  # sizes within a factor of 2 share their timings
        lone = self.lone_choice.use_lone(key)
        start = time.perf_counter()
        outputs = (self._lone[graph] if lone else lane).run(None, feeds)
        self.lone_choice.record(key, lone, time.perf_counter() - start, work)
        return outputs

    def set_lone_check(self, check: Callable[[], bool] | None) -> None:
        self._lone_check = check

    def _empty(self, batch: int) -> np.ndarray:
        """A zero-slot past cache [batch, kv_heads, 0, head_dim] (prefill: P = 0)."""
        empty = self._empty_cache.get(batch)
        if empty is None:
            empty = np.zeros((batch, self.num_kv_heads, 0, self.head_dim), dtype=self._np_dtype)
            self._empty_cache[batch] = empty
        return empty

    # -- KV plumbing -----------------------------------------------------------------------------------
    def kv_for_decode(self, kv: KV, mask: np.ndarray) -> KV:
        # rows packed from slot 0, so a row decodes alike whatever shares its batch (runners/decode_kv.py); engines
        # that do not claim batch invariance, or whose graphs have no frozen segment, keep the engine's layout
        if not self.packed_decode or isinstance(kv, DecodeKV):
            return kv
        mask, shape = np.asarray(mask, bool), (kv.keys[0].shape[0], self.kv_length(kv))
        if mask.shape != shape:
            raise InvalidInputError(f"mask must be {list(shape)}, got {list(mask.shape)}")
        return DecodeKV.pack(kv.segments(), mask)

    def kv_select(self, kv: KV, rows: Sequence[int], length: int | None = None, reserve: int = 0) -> KV:
        if isinstance(kv, DecodeKV):
            if length is not None and length != kv.width:
                raise InvalidInputError("a decode KV's rows are packed: it is selected whole (length=None)")
            return kv.select(rows)
        idx = np.asarray(list(rows), dtype=np.intp)
        full = self.kv_length(kv)
        cut = full if length is None else int(length)
        if not 0 <= cut <= full:
            raise InvalidInputError(f"length {length} is outside the KV's {full} slots")

        def pick(tensors: list[np.ndarray], start: int) -> list[np.ndarray]:
            # one gather per tensor: advanced index on the batch axis with the slot cut -> a new contiguous array
            n = min(tensors[0].shape[2], max(0, cut - start))
            return [t[idx] if n == t.shape[2] else t[idx, :, :n] for t in tensors]

        picked, start = [], 0
        for keys, values in kv.segments():  # each segment keeps its place: no join before the gather
            picked.append((pick(keys, start), pick(values, start)))
            start += keys[0].shape[2]
        return OrtKV.from_segments(picked)

    def kv_stack(self, kvs: Sequence[KV], length: int, reserve: int = 0) -> KV:
        packed = [isinstance(kv, DecodeKV) for kv in kvs]
        if any(packed):
            if not all(packed):
                raise InvalidInputError("kv_stack: decode KVs stack only with decode KVs (Runner.kv_for_decode)")
            return DecodeKV.stack(kvs, length)
        rows, first = sum(kv.keys[0].shape[0] for kv in kvs), kvs[0].keys[0]
        lengths = [self.kv_length(kv) for kv in kvs]
        if max(lengths) > length:
            raise InvalidInputError(f"kv_stack: a KV of {max(lengths)} slots does not fit length {length}")

        def stack(segments: list[list[np.ndarray]]) -> np.ndarray:
            # each KV's segments (frozen, then past) written in place: one copy, padding zeros after them
            out = np.zeros((rows, first.shape[1], length, first.shape[3]), dtype=first.dtype)
            row = 0
            for parts in segments:
                slot = 0
                for t in parts:
                    out[row : row + t.shape[0], :, slot : slot + t.shape[2]] = t
                    slot += t.shape[2]
                row += parts[0].shape[0]
            return out

        def parts(kv: OrtKV, layer: int, kind: int) -> list[np.ndarray]:  # kind 0: keys, 1: values
            return [segment[kind][layer] for segment in kv.segments()]

        keys = [stack([parts(kv, layer, 0) for kv in kvs]) for layer in range(self.num_layers)]
        values = [stack([parts(kv, layer, 1) for kv in kvs]) for layer in range(self.num_layers)]
        return OrtKV(keys, values)

    def kv_gather_slots(self, kv: KV, index: np.ndarray, reserve: int = 0) -> KV:
        if isinstance(kv, DecodeKV):  # already packed: the engine's compaction keeps live slots in order
            return kv.with_width(np.asarray(index).shape[1])
        at = np.asarray(index, dtype=np.intp)[:, None, :, None]  # [rows, 1, L, 1] against [rows, heads, S, dim]
        kv = kv.joined()
        return OrtKV([np.take_along_axis(k, at, axis=2) for k in kv.keys],
                     [np.take_along_axis(v, at, axis=2) for v in kv.values])

    def kv_length(self, kv: KV) -> int:
        if isinstance(kv, DecodeKV):
            return kv.width
        return kv.frozen_length + int(kv.keys[0].shape[2])

    def kv_layers(self, kv: KV) -> tuple[list, list, int]:
        if isinstance(kv, DecodeKV):
            raise InvalidInputError("a decode KV's rows are packed, not in the engine's slot layout: kv_layers takes "
                                    "the KV of a prefill (the KV store's entries)")
        if kv.frozen_keys is not None:  # one segment from now on, so that the buffers returned are the KV's own
            whole = kv.joined()
            kv.keys, kv.values, kv.frozen_keys, kv.frozen_values = whole.keys, whole.values, None, None
        contiguous = lambda ts: [np.ascontiguousarray(t) for t in ts]  # noqa: E731 (a no-op for our own arrays)
        return contiguous(kv.keys), contiguous(kv.values), int(kv.keys[0].shape[2])

    def kv_empty(self, batch: int, length: int, reserve: int = 0) -> KV:
        # KVs here are exactly their length (the graph concatenates): reserve is not needed.
        shape = (batch, self.num_kv_heads, length, self.head_dim)
        return OrtKV([np.zeros(shape, self._np_dtype) for _ in range(self.num_layers)],
                     [np.zeros(shape, self._np_dtype) for _ in range(self.num_layers)])

    def kv_nbytes(self, kv: KV) -> int:
        if isinstance(kv, DecodeKV):
            return kv.nbytes()
        return int(sum(t.nbytes for segment in kv.segments() for tensors in segment for t in tensors))

    def embeds_nbytes(self, embeds: Embeds) -> int:
        return int(embeds.nbytes)

    def close(self) -> None:
        self._vision = self._decoder = self._lone = None


# ---------------------------------------------------------------------------------------------- helpers


def _specs(args: Sequence[Any]) -> list[TensorSpec]:
    """onnxruntime NodeArgs -> TensorSpecs in the manifest's terms."""
    return [TensorSpec(a.name, ORT_DTYPES.get(a.type, a.type), tuple(a.shape)) for a in args]


def _session_options(ort: Any, intra_op_threads: int | None) -> Any:
    if os.environ.get(THREADS_ENV):  # the user's explicit setting wins over the engine's plan (lanes)
        try:
            intra_op_threads = int(os.environ[THREADS_ENV])
        except ValueError:
            raise InvalidInputError(f"${THREADS_ENV} must be an integer, got {os.environ[THREADS_ENV]!r}") from None
    if intra_op_threads is not None and (not isinstance(intra_op_threads, int) or intra_op_threads < 0):
        raise InvalidInputError(f"intra_op_threads must be an int >= 0 (0 = onnxruntime's default), "
                                f"got {intra_op_threads!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads or 0
    options.log_severity_level = 3  # errors only: shape-inference notes on symbolic dims are not news
    return options


def _default_providers(ort: Any, device: str, engine_dir: EngineDir) -> list[Any]:
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if not device.startswith("cuda"):
        raise InvalidInputError(f"unknown device {device!r}; valid: 'cpu', 'cuda', 'cuda:N'")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if "CUDAExecutionProvider" not in available:
        raise BackendUnavailableError(f"device {device!r} asked for, but this onnxruntime has no CUDA execution "
                                      f"provider (available: {available}); install onnxruntime-gpu")
    chosen: list[Any] = []
    if "TensorrtExecutionProvider" in available:
        chosen.append(("TensorrtExecutionProvider", {"device_id": index, **tensorrt_ep_options(engine_dir)}))
    return [*chosen, ("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def tensorrt_ep_options(engine_dir: EngineDir) -> dict[str, str]:
    """TensorRT EP profile options from the manifest's profiles: one range per input covering all of its graph's
    profiles (the EP takes one profile; ``trt_profile_*_shapes`` as "name:AxBxC,name2:..."). Shared across
    graphs by input name, which never collide between vision and decoder."""
    ranges: dict[str, list[list[int]]] = {}
    for profiles in (engine_dir.manifest.get("profiles") or {}).values():
        for profile in profiles:
            for name, rng in profile["shapes"].items():
                lo, opt, hi = rng["min"], rng["opt"], rng["max"]
                if name in ranges:
                    cur = ranges[name]
                    lo = [min(a, b) for a, b in zip(cur[0], lo)]
                    opt, hi = cur[1], [max(a, b) for a, b in zip(cur[2], hi)]
                ranges[name] = [lo, opt, hi]
    fmt = lambda k: ",".join(f"{n}:{'x'.join(map(str, r[k]))}" for n, r in ranges.items())  # noqa: E731
    return {"trt_profile_min_shapes": fmt(0), "trt_profile_opt_shapes": fmt(1), "trt_profile_max_shapes": fmt(2)}


def _map_embeddings(engine_dir: EngineDir) -> np.ndarray:
    """The embedding table as a read-only memory map of the safetensors file ([vocab, hidden])."""
    entry = engine_dir.embeddings
    path = engine_dir.path / entry.file
    header = read_safetensors_header(path, error=EngineArtifactError)
    info = header.tensors.get(entry.tensor)
    if info is None or info["dtype"] not in _SAFETENSORS_DTYPES:
        raise EngineArtifactError(f"{path}: holds no float32/float16 tensor {entry.tensor!r} "
                                  f"(tensors: {sorted(header.tensors)[:5]})")
    dtype = _SAFETENSORS_DTYPES[info["dtype"]]
    begin, end = (int(x) for x in info["data_offsets"])
    shape = tuple(int(d) for d in info["shape"])
    if shape != tuple(entry.shape) or end - begin != int(np.prod(shape)) * np.dtype(dtype).itemsize:
        raise EngineArtifactError(f"{path}: tensor {entry.tensor!r} is {list(shape)} ({end - begin} bytes), the "
                                  f"manifest declares {list(entry.shape)}")
    return np.asarray(np.memmap(path, dtype=dtype, mode="r", offset=header.data_start + begin, shape=shape))
