"""Export a Qwen2.5-VL checkpoint to an engine directory: vision.onnx, decoder.onnx, the embedding table, the
tokenizer / config files and manifest.json (layout and schema: c4u_engine/runners/engine_dir.py).

    python -m export CKPT_DIR [--out DIR] [--opset 17] [--precision fp32|fp16|bf16|int8|int4] [--no-check-tensorrt]

The graphs are traced from the reference model (c4u_engine/models) with torch.onnx.export(dynamo=False):
- vision: VisionTower.forward_tensors; every grid-dependent input (window order, rotary, segment ids) is an
  input computed in numpy by vision_aux.py, so one graph serves any number of patches and any grid;
- decoder: LanguageModel.forward with the KV cache as explicit inputs and outputs. Prefill and decode are the same
  graph: at prefill the past tensors have P = 0 slots (zero-size arrays), which onnxruntime accepts (tested).
Graphs whose weights exceed ~1.8 GiB are saved with external data (``<graph>.onnx.data``, one file per graph),
so the 2 GB protobuf limit never applies. manifest.json is written last: an interrupted export leaves none.
int8 / int4: the fp32 export (in a temporary directory beside the output) through export/quantize.py.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from c4u_engine._version import __version__
from c4u_engine.errors import EngineArtifactError, InvalidInputError, ModelFormatError
from c4u_engine.models.checkpoint import load_model
from c4u_engine.models.checkpoint_files import checkpoint_fingerprint
from c4u_engine.models.config import ModelConfig
from c4u_engine.models.vision_aux import vision_aux_arrays
from c4u_engine.ops.preprocess_params import PreprocessParams
from c4u_engine.runners.engine_dir import (EMBED_FILE, EMBED_TENSOR, ENGINE_SUBDIR, MANIFEST_FILE, VISION_INPUTS,
                                           VISION_OUTPUTS, decoder_input_names, decoder_output_names, engine_subdir)
from c4u_engine.runners.precision import FLOAT_DTYPES, QUANTIZED, normalize_precision

from export.attention import export_friendly_attention
from export.build_tensorrt import onnx_sha256
from export.check_tensorrt import graph_inputs
from export.manifest import (ProfileLimits, build_manifest, decoder_profiles, tensor_specs, vision_profiles,
                             write_manifest)
from export.profiles import validate_profiles

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MIN_OPSET = 17
REQUIRED_FILES = ("config.json", "tokenizer.json", "preprocessor_config.json")
OPTIONAL_FILES = ("generation_config.json", "tokenizer_config.json", "chat_template.json", "chat_template.jinja",
                  "special_tokens_map.json", "vocab.json", "merges.txt", "added_tokens.json", "c4u_prompt.json")
EXTERNAL_DATA_BYTES = int(1.8 * (1 << 30))  # below protobuf's 2 GiB ceiling, with room for the graph itself


@dataclass
class ExportResult:
    """Where the engine directory is, its manifest, and seconds per step."""

    out_dir: Path
    manifest: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _VisionGraph(nn.Module):
    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.tower.forward_tensors(*tensors)


class _DecoderGraph(nn.Module):
    """LanguageModel.forward with flat inputs (head inputs, past key/value per layer, then frozen key/value per
    layer) and flat outputs."""

    def __init__(self, language: nn.Module) -> None:
        super().__init__()
        self.language = language

    def forward(self, inputs_embeds, position_ids, attention_mask, logits_index, *caches):
        past, frozen = caches[: len(caches) // 2], caches[len(caches) // 2 :]
        logits, keys, values = self.language(inputs_embeds, position_ids, list(past[0::2]), list(past[1::2]),
                                             attention_mask, logits_index, list(frozen[0::2]), list(frozen[1::2]))
        return (logits, *(t for pair in zip(keys, values) for t in pair))


def export_engine(
    ckpt_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    opset: int = MIN_OPSET,
    dtype: str = "float32",
    limits: ProfileLimits | None = None,
    external_data: bool | None = None,
    precision: str | None = None,
    block_size: int | None = None,
    float_kept: Sequence[str] | None = None,
    batch_invariant: bool | None = None,
    log: Callable[[str], None] = _stderr,
    **int8_options: Any,
) -> ExportResult:
    """Export the checkpoint at ckpt_dir into out_dir (default ckpt_dir/onnx) and return the result.

    dtype: the weights' and activations' type in the graphs (float32 for onnxruntime on CPU; bfloat16/float16
    for TensorRT). precision (fp32 | fp16 | bf16 | int8 | int4) overrides dtype; int8 / int4 quantize the fp32
    export (export/quantize.py: block_size for int4, float_kept units, and for int8 its activation_scales,
    smoothing, alpha and calibration; out_dir default ckpt_dir/onnx-int8 etc.).
    external_data: None = only when a graph's weights need it; True/False to force.
    batch_invariant: attention whose rounding never depends on what shares a batch (export/attention.py: softmax
    row sums in float64); None = on for int8 / int4 (whose quantization would magnify a last-bit difference into a
    whole int8 step), off for float precisions (their batches move P(A) by ~1e-7, and TensorRT has no float64).
    Existing files of a previous export in out_dir are replaced (its manifest first, so a failed re-export
    leaves no stale manifest). Raises ModelFormatError / UnsupportedModelError for a bad checkpoint,
    InvalidInputError for bad options, EngineArtifactError if an exported graph fails its checks.
    """
    started = time.perf_counter()
    ckpt_dir = Path(ckpt_dir)
    if precision is not None:
        precision = normalize_precision(precision)
        if precision in QUANTIZED:
            return _export_quantized(ckpt_dir, out_dir, precision, block_size, float_kept, log, int8_options,
                                     opset=opset, limits=limits, external_data=external_data,
                                     batch_invariant=True if batch_invariant is None else batch_invariant)
        dtype = FLOAT_DTYPES[precision]
    batch_invariant = bool(batch_invariant)  # float exports: off unless asked
    if block_size is not None or float_kept is not None or any(v is not None for v in int8_options.values()):
        raise InvalidInputError("block_size, float_kept, activation scales, smoothing and calibration apply to "
                                "int8 / int4 exports only")
    out_dir = Path(out_dir) if out_dir is not None else ckpt_dir / ENGINE_SUBDIR
    if dtype not in DTYPES:
        raise InvalidInputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise InvalidInputError(f"opset must be an int >= {MIN_OPSET}, got {opset!r}")
    if out_dir.resolve() == ckpt_dir.resolve():
        raise InvalidInputError(f"--out must differ from the checkpoint directory {ckpt_dir}")
    limits = limits or ProfileLimits()
    config = ModelConfig.from_json(ckpt_dir / "config.json")
    preprocess = PreprocessParams.from_preprocessor_config(ckpt_dir / "preprocessor_config.json")
    for name in REQUIRED_FILES:
        if not (ckpt_dir / name).is_file():
            raise ModelFormatError(f"{ckpt_dir / name}: missing (an engine directory needs a copy of it)")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    log(f"[export] loading {ckpt_dir} ({dtype})")
    model = load_model(ckpt_dir, device="cpu", dtype=DTYPES[dtype])
    fingerprint = checkpoint_fingerprint(ckpt_dir)
    seconds["load"] = time.perf_counter() - t0

    profiles = {"vision": vision_profiles(config, preprocess, limits), "decoder": decoder_profiles(config, limits)}
    graphs: dict[str, dict[str, Any]] = {}
    for name, module, args, inputs, outputs, axes in (
        ("vision", _VisionGraph(model.visual), _vision_example(config), list(VISION_INPUTS), list(VISION_OUTPUTS),
         _vision_axes()),
        ("decoder", _DecoderGraph(model.language), _decoder_example(config, DTYPES[dtype]),
         decoder_input_names(config.text.num_hidden_layers), decoder_output_names(config.text.num_hidden_layers),
         _decoder_axes(config.text.num_hidden_layers)),
    ):
        t0 = time.perf_counter()
        graphs[name] = _export_graph(name, module, args, inputs, outputs, axes, out_dir, opset, external_data,
                                     profiles[name], log, batch_invariant)
        seconds[name] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log(f"[export] {EMBED_FILE}: {config.text.vocab_size} x {config.text.hidden_size} {dtype}")
    embeddings = _write_embeddings(model, out_dir, dtype)
    del model
    files = [n for n in (*REQUIRED_FILES, *OPTIONAL_FILES) if (ckpt_dir / n).is_file()]
    for name in files:
        shutil.copyfile(ckpt_dir / name, out_dir / name)
    manifest = build_manifest(
        config=config, dtype=dtype, opset=opset, source_dir=ckpt_dir.resolve(), source_fingerprint=fingerprint,
        graphs=graphs, embeddings=embeddings, files=files, profiles=profiles, exporter_version=__version__,
        batch_invariant=batch_invariant,
        tool_versions={"torch": torch.__version__, "onnx": onnx.__version__},
    )
    write_manifest(out_dir, manifest)
    seconds["files"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    log(f"[export] wrote {out_dir} in {seconds['total']:.1f} s")
    return ExportResult(out_dir, manifest, seconds)


def _export_quantized(ckpt_dir: Path, out_dir: str | Path | None, precision: str, block_size: int | None,
                      float_kept: Sequence[str] | None, log: Callable[[str], None], int8_options: dict[str, Any],
                      **options: Any) -> ExportResult:
    from export.quantize import (DEFAULT_FLOAT_KEPT, check_int8_options, check_options, check_quantizable,
                                 quantize_engine)

    started = time.perf_counter()
    float_kept = DEFAULT_FLOAT_KEPT if float_kept is None else float_kept
    check_options(precision, block_size, float_kept)  # before minutes of tracing
    unknown = set(int8_options) - {"activation_scales", "smoothing", "alpha", "calibration", "float_columns"}
    if unknown:
        raise InvalidInputError(f"export_engine: unknown option(s) {sorted(unknown)}")
    int8_options = {k: v for k, v in int8_options.items() if v is not None}
    check_int8_options(precision, *(int8_options.get(k) for k in ("activation_scales", "smoothing", "alpha")),
                       None if int8_options.get("float_columns") else int8_options.get("calibration"))
    if isinstance(int8_options.get("calibration"), (str, Path)):  # (or a CalibrationSet: tests, benchmarks)
        from export.calibration import directory_set

        int8_options["calibration"] = directory_set(int8_options["calibration"])  # its errors before the export
    check_quantizable(precision)
    out = Path(out_dir) if out_dir is not None else ckpt_dir / engine_subdir(precision)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-fp32-") as tmp:
        base = export_engine(ckpt_dir, tmp, dtype="float32", log=log, **options)
        t0 = time.perf_counter()
        manifest = quantize_engine(tmp, out, precision, block_size=block_size, float_kept=float_kept, log=log,
                                   **int8_options)
    seconds = {**{k: v for k, v in base.seconds.items() if k != "total"}, "quantize": time.perf_counter() - t0,
               "total": time.perf_counter() - started}
    log(f"[export] wrote {out} ({precision}) in {seconds['total']:.1f} s")
    return ExportResult(out, manifest, seconds)


# ---------------------------------------------------------------------------------------------- examples


def _vision_example(config: ModelConfig) -> tuple[torch.Tensor, ...]:
    """Two images of different grids (any grid traces the same graph: all grid logic is in the aux inputs)."""
    merge = config.vision.spatial_merge_size
    grid = np.array([[1, 2 * merge, 3 * merge], [1, merge, merge]], dtype=np.int64)
    aux = vision_aux_arrays(grid, config)
    patches = int(np.prod(grid, axis=1).sum())
    pixels = torch.randn(patches, config.vision.patch_dim, generator=torch.Generator().manual_seed(0))
    return (pixels, *(torch.from_numpy(getattr(aux, n)) for n in VISION_INPUTS[1:]))


def _vision_axes() -> dict[str, dict[int, str]]:
    rows = {0: "patches"}
    return {"pixel_patches": rows, "cos": rows, "sin": rows, "full_segments": rows, "window_segments": rows,
            "window_index": {0: "units"}, "reverse_index": {0: "units"}, "image_embeds": {0: "units"}}


def _decoder_example(config: ModelConfig, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Batch 2, 3 new tokens after 4 frozen and 2 past slots (none empty, so nothing specializes on an empty
    cache; the segments differ in length, so their length symbols stay apart)."""
    text = config.text
    b, s, p, f = 2, 3, 2, 4
    gen = torch.Generator().manual_seed(0)
    embeds = torch.randn(b, s, text.hidden_size, generator=gen).to(dtype)
    positions = (torch.arange(s) + f + p).expand(3, b, s).contiguous()
    mask = torch.ones(b, f + p + s, dtype=torch.bool)
    index = torch.tensor([[s - 1], [s - 2]])
    cache = lambda n: [torch.randn(b, text.num_key_value_heads, n, text.head_dim, generator=gen).to(dtype)  # noqa: E731
                       for _ in range(2 * text.num_hidden_layers)]
    return (embeds, positions, mask, index, *cache(p), *cache(f))


def _decoder_axes(layers: int) -> dict[str, dict[int, str]]:
    axes = {"inputs_embeds": {0: "batch", 1: "seq"}, "position_ids": {1: "batch", 2: "seq"},
            "attention_mask": {0: "batch", 1: "total"}, "logits_index": {0: "batch", 1: "num_logits"},
            "logits": {0: "batch", 1: "num_logits"}}
    for i in range(layers):
        for kind in ("key", "value"):
            axes[f"past_{kind}_{i}"] = {0: "batch", 2: "past"}
            axes[f"frozen_{kind}_{i}"] = {0: "batch", 2: "frozen"}
            axes[f"present_{kind}_{i}"] = {0: "batch", 2: "grown"}
    return axes


# ---------------------------------------------------------------------------------------------- graphs


def _export_graph(name: str, module: nn.Module, args: tuple, inputs: list[str], outputs: list[str],
                  axes: dict[str, dict[int, str]], out_dir: Path, opset: int, external_data: bool | None,
                  profiles: list, log: Callable[[str], None], batch_invariant: bool = False) -> dict[str, Any]:
    """Trace, save (external data when needed), check and describe one graph -> its manifest entry."""
    path = out_dir / f"{name}.onnx"
    data_name = f"{name}.onnx.data"
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    log(f"[export] {path.name}: tracing ({weight_bytes / 2**20:.1f} MiB of weights)")
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{name}-") as tmp:
        traced = Path(tmp) / path.name
        with warnings.catch_warnings(), torch.no_grad(), export_friendly_attention(batch_invariant):
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
            torch.onnx.export(module, args, str(traced), input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
        proto = onnx.load(str(traced))  # pulls in any per-tensor files the tracer wrote for a big model
    external = weight_bytes > EXTERNAL_DATA_BYTES if external_data is None else external_data
    (out_dir / data_name).unlink(missing_ok=True)  # onnx appends to an existing data file
    log(f"[export] {path.name}: saving{' with external data ' + data_name if external else ''}")
    onnx.save_model(proto, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)
    del proto

    log(f"[export] {path.name}: onnx.checker and shape inference")
    try:
        onnx.checker.check_model(str(path))  # by path: works for external data and > 2 GB
        structure = onnx.load(str(path), load_external_data=False)
        onnx.shape_inference.infer_shapes(structure, check_type=True, strict_mode=True)
    except Exception as exc:  # onnx raises several checker / inference error types
        raise EngineArtifactError(f"{path}: the exported graph fails onnx's checks: {exc}") from exc
    problems = validate_profiles(name, profiles, graph_inputs(structure))
    if problems:
        raise EngineArtifactError(f"{path}: exporter profiles do not fit the graph: " + "; ".join(problems))
    locations = sorted({e.value for t in structure.graph.initializer for e in t.external_data if e.key == "location"})
    log(f"[export] {path.name}: sha256")
    return {
        "file": path.name,
        "sha256": onnx_sha256(path),
        "external_data": locations,
        "inputs": [s.to_json() for s in tensor_specs(structure.graph.input)],
        "outputs": [s.to_json() for s in tensor_specs(structure.graph.output)],
    }


def _write_embeddings(model: nn.Module, out_dir: Path, dtype: str) -> dict[str, Any]:
    from safetensors.torch import save

    from c4u_engine.runners.engine_dir import sha256_file

    weight = model.language.embed_tokens.weight.detach().contiguous()
    path = out_dir / EMBED_FILE
    path.write_bytes(save({EMBED_TENSOR: weight}, metadata={"format": "pt"}))  # (save_file makes it 0600)
    return {"file": EMBED_FILE, "tensor": EMBED_TENSOR, "dtype": dtype, "shape": list(weight.shape),
            "sha256": sha256_file(path).hexdigest()}
