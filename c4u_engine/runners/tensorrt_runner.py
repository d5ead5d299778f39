"""The GPU runtime: an engine directory's TensorRT plans (python -m export.build_tensorrt) on one CUDA device.

Engine directory: a checkpoint's onnx/ subdirectory or the directory itself, as for onnxruntime (engine_dir.py
checks the manifest and digests), plus vision.plan and decoder.plan with their sidecars (tensorrt_plan.py checks
TensorRT version, GPU, ONNX digest, profiles and plan digest). Device buffers are torch CUDA tensors; all work is
enqueued on the runner's own stream (tensorrt_session.py).

KV caches are torch tensors on the GPU ([B, kv_heads, L, head_dim] per layer, exactly L slots): the decoder graph
returns present = concat(past, new) as fresh buffers, so a past KV is never written and `reserve` is not needed.
Embeddings are torch tensors; the token embedding table is loaded onto the GPU. Logits come back as float32 numpy.

Shapes: each engine call runs on the optimization profile that holds its shapes and is nearest to them ("prefill"
or "decode" for the decoder). A batch larger than every profile's max runs as chunks along the batch, concatenated;
more new tokens than any profile takes run as pieces along the sequence, each attending to the KV of the ones
before (chunked prefill); a row whose context fits no profile raises LimitExceededError naming the limit. Images
are encoded in groups of at most VISION_GROUP_PATCHES patches (an image over the vision profile's max is refused).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from c4u_engine.errors import BackendUnavailableError, EngineArtifactError, InvalidInputError, LimitExceededError
from c4u_engine.models.config import ModelConfig
from c4u_engine.models.rope import image_token_count
from c4u_engine.models.vision_aux import check_grid_thw, vision_aux_arrays
from c4u_engine.runners.base import KV, Embeds, Runner, split_by_budget
from c4u_engine.runners.engine_dir import (DECODER_HEAD_INPUTS, VISION_INPUTS, EngineDir, decoder_input_names,
                                           decoder_output_names, decoder_takes_frozen, load_engine_dir)
from c4u_engine.runners.tensorrt_plan import (LoadedPlan, PlanProfile, choose_profile, import_tensorrt, load_plan,
                                              misfit, plan_path, read_profiles, split_rows)
from c4u_engine.runners.tensorrt_session import CudaPlacement, TrtSession, torch_dtype

VISION_GROUP_PATCHES = 2048  # patches per vision call, unless one image alone has more (attention is quadratic)
_DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
                  "bfloat16": "bfloat16", "bf16": "bfloat16"}


def _past_names(num_layers: int) -> list[str]:
    return decoder_input_names(num_layers, frozen=False)[len(DECODER_HEAD_INPUTS):]


def _frozen_names(num_layers: int) -> list[str]:
    return decoder_input_names(num_layers)[len(DECODER_HEAD_INPUTS) + 2 * num_layers:]


def decoder_chunks(profiles: Sequence[PlanProfile], config: ModelConfig, batch: int, new: int, past: int,
                   logits: int) -> list[tuple[int, int, int]]:
    """(first row, end row, profile index) per decoder engine call for a forward of `batch` rows of `new` tokens
    after `past` slots, `logits` positions per row; LimitExceededError naming the limit a row exceeds."""
    text, pasts = config.text, _past_names(config.text.num_hidden_layers)
    cache = (batch, text.num_key_value_heads, past, text.head_dim)
    shapes = {"inputs_embeds": (batch, new, text.hidden_size), "position_ids": (3, batch, new),
              "attention_mask": (batch, past + new), "logits_index": (batch, logits), **{n: cache for n in pasts}}
    batch_axes = {"inputs_embeds": 0, "position_ids": 1, "attention_mask": 0, "logits_index": 0,
                  **{n: 0 for n in pasts}}
    labels = {("inputs_embeds", 1): "new tokens per call", ("attention_mask", 1): "context (past + new tokens)",
              ("logits_index", 1): "logits positions per row", **{(n, 2): "past tokens" for n in pasts}}
    return split_rows(profiles, shapes, batch_axes, graph="decoder", labels=labels)


def sequence_pieces(profiles: Sequence[PlanProfile], new: int) -> list[tuple[int, int]]:
    """(first, end) token pieces per decoder pass for `new` tokens: one piece when a profile holds them all,
    else near-equal pieces of at most the most new tokens any profile holds (chunked prefill)."""
    most = max(p.shapes["inputs_embeds"][2][1] for p in profiles if "inputs_embeds" in p.shapes)
    count = -(-new // most)
    pieces, start = [], 0
    for i in range(count):
        size = new // count + (1 if i < new % count else 0)
        pieces.append((start, start + size))
        start += size
    return pieces


def vision_calls(profiles: Sequence[PlanProfile], config: ModelConfig, patches: np.ndarray) -> list[tuple[slice, int]]:
    """(images, profile index) per vision engine call for images of `patches` patches each: consecutive images
    up to VISION_GROUP_PATCHES patches per call (an image with more alone); LimitExceededError for an image
    larger than every profile's max."""
    v = config.vision
    most = max(p.shapes["pixel_patches"][2][0] for p in profiles if "pixel_patches" in p.shapes)
    calls = []
    for group in split_by_budget(patches, min(VISION_GROUP_PATCHES, most)):
        n = int(np.sum(patches[group]))
        shapes = {"pixel_patches": (n, v.patch_dim), "cos": (n, v.head_dim), "sin": (n, v.head_dim),
                  "window_index": (n // v.merge_unit,), "reverse_index": (n // v.merge_unit,),
                  "full_segments": (n,), "window_segments": (n,)}
        index = choose_profile(profiles, shapes)
        if index is None:
            why = "; ".join(f"profile '{p.name}': {misfit(p, shapes)}" for p in profiles)
            raise LimitExceededError(f"vision: an image of {n} patches fits no TensorRT optimization profile "
                                     f"({why}); use smaller images, or re-export with a larger --max-vision-images "
                                     f"and rebuild the plans")
        calls.append((group, index))
    return calls


class TrtKV:
    """Per-layer K and V torch CUDA tensors, each [batch, kv_heads, length, head_dim], contiguous."""

    __slots__ = ("keys", "values")

    def __init__(self, keys: list[Any], values: list[Any]) -> None:
        self.keys = keys
        self.values = values


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, model_dir: str | Path, device: str = "cuda", dtype: str | None = None, *,
                 verify_hashes: bool = True) -> None:
        import_tensorrt()  # BackendUnavailableError("tensorrt is not installed ...") before anything else
        self.placement = CudaPlacement(device)
        self.device = str(self.placement.device)
        self._torch = self.placement.torch
        self.engine_dir: EngineDir = load_engine_dir(model_dir, verify_hashes=verify_hashes)
        self.dtype = self._check_dtype(dtype)
        cfg = self.engine_dir.config
        self.config = cfg
        self._set_model_facts(cfg)
        manifest, where = self.engine_dir.manifest, str(self.engine_dir.path / "manifest.json")
        self._profiles = {g: read_profiles(manifest, g, where) for g in ("vision", "decoder")}
        self._plans: dict[str, LoadedPlan] = {}
        self._sessions: dict[str, TrtSession] = {}
        with self.placement.active():
            for graph in ("vision", "decoder"):
                self._open(graph)
            self._table = self._load_table()
        self._present = decoder_output_names(self.num_layers)[1:]
        self._past = _past_names(self.num_layers)
        # This runner passes the whole cache as past (present = concat(past, new) in device memory, no host copy),
        # so a decoder that also takes a frozen segment gets it empty.
        self._frozen = _frozen_names(self.num_layers) if decoder_takes_frozen(self.engine_dir.graphs["decoder"]) \
            else []
        self._lock = threading.Lock()  # one call at a time: a TensorRT execution context is not re-entrant

    # -- setup -----------------------------------------------------------------------------------------
    def _check_dtype(self, dtype: str | None) -> str:
        exported = self.engine_dir.dtype
        if dtype is not None and _DTYPE_ALIASES.get(str(dtype)) != exported:
            raise BackendUnavailableError(
                f"dtype {dtype!r} asked for, but {self.engine_dir.path} was exported in {exported} and its TensorRT "
                f"plans run that; pass dtype=None or re-export with c4u export CKPT --dtype {dtype} and "
                f"rebuild the plans")
        return exported

    def _open(self, graph: str) -> None:
        path = plan_path(self.engine_dir.path, graph)
        if not path.is_file():
            raise EngineArtifactError(f"{path}: missing TensorRT plan; build it on this GPU: "
                                      f"python -m export.build_tensorrt {self.engine_dir.path}")
        plan = load_plan(path, self.engine_dir.manifest, graph=graph, gpu=self.placement.gpu())
        session = TrtSession(plan.engine, plan.meta)
        entry = self.engine_dir.graphs[graph]
        session.check_io(str(path), entry.inputs, entry.outputs)
        if plan.engine.num_optimization_profiles != len(self._profiles[graph]):
            raise EngineArtifactError(f"{path}: the engine has {plan.engine.num_optimization_profiles} optimization "
                                      f"profiles, the manifest declares {len(self._profiles[graph])}")
        self._plans[graph], self._sessions[graph] = plan, session

    def _load_table(self) -> Any:
        """The token embedding table [vocab, hidden] on the device, in the export's dtype."""
        from safetensors import safe_open

        entry = self.engine_dir.embeddings
        path = self.engine_dir.path / entry.file
        try:
            with safe_open(str(path), framework="pt") as f:
                table = f.get_tensor(entry.tensor)
        except Exception as exc:  # safetensors raises its own error types for a bad header or a missing tensor
            raise EngineArtifactError(f"{path}: cannot read tensor {entry.tensor!r} ({exc})") from exc
        want = torch_dtype(self._torch, entry.dtype)
        if tuple(table.shape) != tuple(entry.shape) or table.dtype != want:
            raise EngineArtifactError(f"{path}: tensor {entry.tensor!r} is {table.dtype} {list(table.shape)}, the "
                                      f"manifest declares {entry.dtype} {list(entry.shape)}")
        return table.to(self.placement.device)

    def _to_device(self, array: np.ndarray, dtype: Any) -> Any:
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # torch.from_numpy warns on read-only memory (a memmap, a broadcast)
            array = array.copy()
        return self._torch.from_numpy(array).to(self.placement.device, dtype)

    # -- vision ----------------------------------------------------------------------------------------
    def encode_images(self, pixel_values: np.ndarray, grid_thw: np.ndarray) -> list[Embeds]:
        grid = check_grid_thw(grid_thw, self.config.vision)
        pixels = np.asarray(pixel_values, dtype=np.float32)
        patches = np.prod(grid, axis=1)
        expected = (int(patches.sum()), self.config.vision.patch_dim)
        if pixels.shape != expected:
            raise InvalidInputError(f"pixel_values must be [sum(t*h*w), patch_dim] = {list(expected)} for grids "
                                    f"{grid.tolist()}, got {list(pixels.shape)}")
        session, torch = self._sessions["vision"], self._torch
        calls = vision_calls(self._profiles["vision"], self.config, patches)
        outputs, start = [], 0
        with self._lock, self.placement.active():
            for group, profile in calls:
                aux = vision_aux_arrays(grid[group], self.config)
                stop = start + int(patches[group].sum())
                arrays = {"pixel_patches": pixels[start:stop], **{n: getattr(aux, n) for n in VISION_INPUTS[1:]}}
                feeds = {n: self._to_device(a, torch_dtype(torch, session.dtypes[n])) for n, a in arrays.items()}
                outputs.append(session.run(feeds, profile=profile, placement=self.placement)["image_embeds"])
                start = stop
            out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        sizes = image_token_count(grid, self.config.vision.spatial_merge_size)
        return list(torch.split(out, [int(s) for s in sizes]))  # views of one block, as the torch runner gives

    def embed(self, input_ids: np.ndarray, image_embeds: Sequence[Embeds]) -> Embeds:
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise InvalidInputError(f"input_ids must be an integer [B, S] array, got {ids.dtype} {list(ids.shape)}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise InvalidInputError(f"token ids must lie in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}")
        mask_np = ids == self.image_token_id
        torch = self._torch
        with self._lock, self.placement.active():
            index = self._to_device(ids, torch.int64)
            embeds = self._table[index]  # a fresh [B, S, H] tensor
            if len(image_embeds):
                flat = torch.cat([e.to(self.placement.device, embeds.dtype) for e in image_embeds], dim=0)
                n = int(mask_np.sum())  # counted on the host: no device sync
                if n != flat.shape[0]:
                    raise InvalidInputError(f"{n} image-pad tokens but {flat.shape[0]} image embeddings")
                embeds = embeds.masked_scatter(self._to_device(mask_np, torch.bool).unsqueeze(-1), flat)
            return embeds

    # -- decoder ---------------------------------------------------------------------------------------
    def _forward(self, embeds, position_ids, past, attention_mask, logits_index, reserve: int = 0):
        # reserve (spare slots for in-place appends) is a hint this runtime does not need: the graph returns
        # present = concat(past, new) as fresh buffers, so a past KV is never written and may stay shared.
        torch = self._torch
        if not hasattr(embeds, "dim") or embeds.dim() != 3 or embeds.shape[2] != self.hidden_size:
            raise InvalidInputError(f"embeds must be a [B, S, {self.hidden_size}] tensor from embed(), got "
                                    f"{type(embeds).__name__} {list(getattr(embeds, 'shape', []))}")
        b, s = int(embeds.shape[0]), int(embeds.shape[1])
        p = 0 if past is None else self.kv_length(past)
        pos = np.asarray(position_ids)
        mask = np.asarray(attention_mask)
        index = np.asarray(logits_index)
        for name, arr, shape in (("position_ids", pos, (3, b, s)), ("attention_mask", mask, (b, p + s))):
            if arr.shape != shape:
                raise InvalidInputError(f"{name} must be {list(shape)}, got {list(arr.shape)}")
        if index.ndim != 2 or index.shape[0] != b or index.shape[1] < 1 or index.min() < 0 or index.max() >= s:
            raise InvalidInputError(f"logits_index must be [{b}, K >= 1] with values in [0, {s}), got "
                                    f"{index.tolist()}")
        if past is not None and past.keys[0].shape[0] != b:
            raise InvalidInputError(f"past KV has batch {past.keys[0].shape[0]}, embeds batch {b}")
        profiles = self._profiles["decoder"]
        plans = [(a, z, decoder_chunks(profiles, self.config, b, z - a, p + a, index.shape[1]))
                 for a, z in sequence_pieces(profiles, s)]  # every limit checked before any work
        session = self._sessions["decoder"]
        with self._lock, self.placement.active():
            embeds = embeds.to(self.placement.device, torch_dtype(torch, session.dtypes["inputs_embeds"]))
            pos_t, mask_t = self._to_device(pos, torch.int64), self._to_device(mask, torch.bool)
            if past is None:
                empty = torch.empty((b, self.num_kv_heads, 0, self.head_dim), device=self.placement.device,
                                    dtype=torch_dtype(torch, session.dtypes[self._past[0]]))
                caches = [empty] * len(self._past)
            else:
                caches = [t for pair in zip(past.keys, past.values) for t in pair]
            logits = None
            for a, z, chunks in plans:  # chunked prefill: each piece attends to the KV of the pieces before
                heads = {"inputs_embeds": embeds[:, a:z], "position_ids": pos_t[:, :, a:z],
                         "attention_mask": mask_t[:, : p + z],
                         "logits_index": self._to_device(np.clip(index - a, 0, z - a - 1), torch.int64)}
                piece_logits, caches = self._run_rows(heads, caches, chunks)
                if len(plans) == 1:
                    logits = piece_logits
                else:
                    logits = np.empty_like(piece_logits) if logits is None else logits
                    take = (index >= a) & (index < z)
                    logits[take] = piece_logits[take]
        return logits, TrtKV(caches[0::2], caches[1::2])

    def _run_rows(self, heads: dict[str, Any], caches: list[Any], chunks: list[tuple[int, int, int]]
                  ) -> tuple[np.ndarray, list[Any]]:
        """One decoder pass over row chunks: (float32 logits, present KV tensors in decoder output order)."""
        torch, session = self._torch, self._sessions["decoder"]
        runs = []
        for first, end, profile in chunks:
            feeds = {n: t[first:end] for n, t in heads.items() if n != "position_ids"}
            feeds["position_ids"] = heads["position_ids"][:, first:end]
            feeds.update((n, t[first:end]) for n, t in zip(self._past, caches))
            feeds.update((n, caches[0][first:end, :, :0].contiguous()) for n in self._frozen)
            runs.append(session.run(feeds, profile=profile, placement=self.placement))
        join = (lambda n: runs[0][n]) if len(runs) == 1 else (lambda n: torch.cat([r[n] for r in runs]))
        presents = [join(n) for n in self._present]
        return join("logits").float().cpu().numpy(), presents  # .cpu() waits for the stream

    # -- KV plumbing -----------------------------------------------------------------------------------
    def kv_select(self, kv: KV, rows: Sequence[int], length: int | None = None, reserve: int = 0) -> KV:
        full = self.kv_length(kv)
        cut = full if length is None else int(length)
        if not 0 <= cut <= full:
            raise InvalidInputError(f"length {length} is outside the KV's {full} slots")
        with self.placement.active():
            idx = self._to_device(np.asarray(list(rows), dtype=np.int64), self._torch.int64)
            pick = lambda t: t[:, :, :cut].index_select(0, idx).contiguous()  # noqa: E731  (a copy, always)
            return TrtKV([pick(k) for k in kv.keys], [pick(v) for v in kv.values])

    def kv_stack(self, kvs: Sequence[KV], length: int, reserve: int = 0) -> KV:
        lengths = [self.kv_length(kv) for kv in kvs]
        if max(lengths) > length:
            raise InvalidInputError(f"kv_stack: a KV of {max(lengths)} slots does not fit length {length}")
        first = kvs[0].keys[0]
        with self.placement.active():
            def stack(tensors: list[Any]) -> Any:
                rows = sum(t.shape[0] for t in tensors)
                out = self._torch.zeros((rows, first.shape[1], length, first.shape[3]), dtype=first.dtype,
                                        device=self.placement.device)
                row = 0
                for t in tensors:
                    out[row : row + t.shape[0], :, : t.shape[2]] = t
                    row += t.shape[0]
                return out

            keys = [stack([kv.keys[layer] for kv in kvs]) for layer in range(self.num_layers)]
            values = [stack([kv.values[layer] for kv in kvs]) for layer in range(self.num_layers)]
        return TrtKV(keys, values)

    def kv_length(self, kv: KV) -> int:
        return int(kv.keys[0].shape[2])

    def kv_nbytes(self, kv: KV) -> int:
        return int(sum(t.nelement() * t.element_size() for t in (*kv.keys, *kv.values)))

    def close(self) -> None:
        self._sessions.clear()
        self._plans.clear()
        self._table = None
