"""An exported engine directory (``c4u export``), read and checked on the runtime side: no torch, no onnx.

Layout (``<checkpoint>/onnx/`` by default)::

    manifest.json              what is here and the contract it keeps (schema below)
    vision.onnx                patches + grid-derived inputs (vision_aux.py) -> image embeddings
    decoder.onnx [+ .data]     inputs_embeds, M-RoPE positions, mask, logits index, past KV -> logits, present KV
    embed_tokens.safetensors   the token embedding table (the runtime looks rows up in numpy)
    config.json, tokenizer files, chat template, generation / preprocessor configs, c4u_prompt.json when present

manifest.json::

    {"format": "c4u-onnx-engine", "format_version": 1,
     "exporter": {"name": "export.onnx_export", "version": "<c4u_engine.__version__>", ...},
     "model_type": "qwen2_5_vl", "dtype": "float32", "opset": 17,
     "precision": {"name": "int8", ...}   (optional; runners/precision.py: absent = the dtype's float precision)
     "batch_invariant": true              (optional, default false: attention without Softmax nodes, row sums in
                                           float64; export/attention.py)
     "source": {"fingerprint": "<checkpoint_fingerprint of the checkpoint>", "path": "..."},
     "model": {"num_layers": .., "num_kv_heads": .., "head_dim": .., "hidden_size": .., "vocab_size": ..},
     "graphs": {"<name>": {"file": "<name>.onnx", "sha256": "<export.build_tensorrt.onnx_sha256>",
                           "external_data": ["<name>.onnx.data"],
                           "inputs": [{"name": .., "dtype": "float32", "shape": [.., "symbol", ..]}, ...],
                           "outputs": [...]}},
     "embeddings": {"file": "embed_tokens.safetensors", "tensor": "embed_tokens", "dtype": .., "shape": [V, H],
                    "sha256": ".."},
     "files": ["config.json", "tokenizer.json", ...],
     "profiles": {...}  (export/profiles.py's schema, read by the TensorRT tools),
     "tensorrt_plugins": []}

load_engine_dir() checks everything that can be checked without running a graph: the manifest parses and has
the supported format version, every listed file exists, graph and embedding hashes match, the declared I/O
is the runner contract for this config, config.json is a supported model, the graphs hold exactly the
quantization operators the manifest's precision block declares. check_graph_io() then compares the
declared I/O with what the loaded graph really has. Every failure is an EngineArtifactError (UnsupportedModelError
for the model type) that names the file and the problem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c4u_engine.errors import EngineArtifactError
from c4u_engine.models.config import ModelConfig
from c4u_engine.models.file_formats import read_json_object
from c4u_engine.runners.onnx_ops import op_counts
from c4u_engine.runners.precision import (QUANTIZED, PrecisionEntry, check_graph_precision, check_marker_ops,
                                          parse_precision)

MANIFEST_FILE = "manifest.json"
ENGINE_SUBDIR = "onnx"
FORMAT_NAME = "c4u-onnx-engine"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
EMBED_FILE = "embed_tokens.safetensors"
EMBED_TENSOR = "embed_tokens"
GRAPH_NAMES = ("vision", "decoder")
VISION_INPUTS = ("pixel_patches", "cos", "sin", "window_index", "reverse_index", "full_segments", "window_segments")
VISION_OUTPUTS = ("image_embeds",)
DECODER_HEAD_INPUTS = ("inputs_embeds", "position_ids", "attention_mask", "logits_index")
# onnxruntime's NodeArg.type strings -> the dtype names the manifest uses.
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16",
              "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(bool)": "bool", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}
_HASH_CHUNK = 1 << 22

Dim = int | str | None


def decoder_input_names(num_layers: int, frozen: bool = True) -> list[str]:
    """The decoder's inputs, in order: the four head inputs, past_key_i, past_value_i per layer, then (frozen: what the
    export writes now) frozen_key_i, frozen_value_i per layer: slots before the past ones, attended but not
    returned, so a decode step copies only the short past segment into present (engines exported before take
    none: their runners pass the whole cache as past)."""
    kv = lambda prefix: [f"{prefix}_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]  # noqa: E731
    return [*DECODER_HEAD_INPUTS, *kv("past"), *(kv("frozen") if frozen else [])]


def decoder_takes_frozen(entry: "GraphEntry") -> bool:
    """Whether a decoder graph's declared inputs include the frozen KV segment."""
    return any(spec.name.startswith("frozen_key_") for spec in entry.inputs)


def decoder_output_names(num_layers: int) -> list[str]:
    """The decoder's outputs, in order: logits, then present_key_i, present_value_i per layer."""
    return ["logits", *(f"present_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value"))]


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, dtype name ("float32", "int64", "bool", ...), dims (int or symbol)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.dtype}[{dims}]"


@dataclass(frozen=True)
class GraphEntry:
    """A graph of the manifest: its file, digest, external-data files and declared I/O."""

    name: str
    file: str
    sha256: str
    external_data: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class EmbeddingEntry:
    file: str
    tensor: str
    dtype: str
    shape: tuple[int, int]
    sha256: str


@dataclass(frozen=True)
class EngineDir:
    """A validated engine directory."""

    path: Path
    manifest: dict[str, Any]
    config: ModelConfig
    dtype: str
    graphs: dict[str, GraphEntry]
    embeddings: EmbeddingEntry
    precision: PrecisionEntry
    batch_invariant: bool = False  # attention's row sums in float64: results never depend on the batch

    def graph_path(self, name: str) -> Path:
        return self.path / self.graphs[name].file


def engine_subdir(precision: str | None = None) -> str:
    """Where `c4u export CKPT --precision P` puts its engine: onnx/ for the float precisions (one export per
    checkpoint, in the dtype asked), onnx-int8/ and onnx-int4/ beside it for the quantized ones."""
    return f"{ENGINE_SUBDIR}-{precision}" if precision in QUANTIZED else ENGINE_SUBDIR


def find_engine_dir(model_dir: str | Path, precision: str | None = None) -> Path:
    """The engine directory for `model_dir`: itself when it holds manifest.json, else its engine_subdir(precision)."""
    model_dir = Path(model_dir)
    sub = engine_subdir(precision)
    for candidate in (model_dir, model_dir / sub):
        if (candidate / MANIFEST_FILE).is_file():
            return candidate
    flag = f" --precision {precision}" if precision else ""
    raise EngineArtifactError(
        f"{model_dir}: no exported {precision + ' ' if precision else ''}engine ({MANIFEST_FILE} neither there nor "
        f"in {sub}/); export one with: c4u export {model_dir}{flag}"
    )


def sha256_file(path: Path, digest: Any | None = None) -> Any:
    """Feed a file's bytes to `digest` (a new sha256 when None) and return it."""
    digest = digest or hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise EngineArtifactError(f"file not found: {path}") from exc
    return digest


def graph_sha256(engine_dir: Path, entry: GraphEntry) -> str:
    """The graph's digest as export.build_tensorrt.onnx_sha256 computes it (ONNX file, then each external-data
    file as b"\\0" + location + bytes, locations sorted), using the manifest's external-data list."""
    digest = sha256_file(engine_dir / entry.file)
    for location in sorted(entry.external_data):
        digest.update(b"\0" + location.encode())
        sha256_file(engine_dir / location, digest)
    return digest.hexdigest()


def load_engine_dir(model_dir: str | Path, *, precision: str | None = None, verify_hashes: bool = True) -> EngineDir:
    """Find, parse and check an engine directory (see the module docstring for what is checked).

    precision: which engine of model_dir (find_engine_dir); the runner checks that the one found has it.
    verify_hashes=False skips re-hashing the graphs and the embedding table (seconds for a multi-GB model).
    """
    path = find_engine_dir(model_dir, precision)
    manifest_path = path / MANIFEST_FILE
    manifest = read_manifest(manifest_path)
    where = str(manifest_path)
    _check_format(manifest, where)
    for name in _str_list(manifest.get("files", []), f"{where}: 'files'"):
        _require_file(path, name, where)
    config = ModelConfig.from_json(path / "config.json")  # UnsupportedModelError for another model type
    if manifest.get("model_type") != config.model_type:
        raise EngineArtifactError(f"{where}: model_type {manifest.get('model_type')!r} differs from config.json's "
                                  f"{config.model_type!r}")
    _check_model_facts(manifest, config, where)
    dtype = manifest.get("dtype")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise EngineArtifactError(f"{where}: 'dtype' must be float32, float16 or bfloat16, got {dtype!r}")

    graphs_raw = manifest.get("graphs")
    if not isinstance(graphs_raw, Mapping):
        raise EngineArtifactError(f"{where}: 'graphs' must be an object of graph name -> entry")
    missing = [g for g in GRAPH_NAMES if g not in graphs_raw]
    if missing:
        raise EngineArtifactError(f"{where}: no graph {missing[0]!r} under 'graphs' (needs {list(GRAPH_NAMES)})")
    graphs = {g: _graph_entry(g, graphs_raw[g], f"{where}: graphs.{g}") for g in GRAPH_NAMES}
    embeddings = _embedding_entry(manifest.get("embeddings"), f"{where}: embeddings")
    for entry in graphs.values():
        for name in (entry.file, *entry.external_data):
            _require_file(path, name, where)
    _require_file(path, embeddings.file, where)
    _check_contract(graphs, config, dtype, where)
    if tuple(embeddings.shape) != (config.text.vocab_size, config.text.hidden_size) or embeddings.dtype != dtype:
        raise EngineArtifactError(
            f"{where}: embeddings are {embeddings.dtype}{list(embeddings.shape)}, expected "
            f"{dtype}[{config.text.vocab_size}, {config.text.hidden_size}] for this config.json")
    if verify_hashes:
        for entry in graphs.values():
            found = graph_sha256(path, entry)
            if found != entry.sha256:
                raise EngineArtifactError(
                    f"{path / entry.file}: sha256 {found} differs from the manifest's {entry.sha256} (the graph or "
                    f"its external data was changed or corrupted; re-export)")
        found = sha256_file(path / embeddings.file).hexdigest()
        if found != embeddings.sha256:
            raise EngineArtifactError(f"{path / embeddings.file}: sha256 {found} differs from the manifest's "
                                      f"{embeddings.sha256} (changed or corrupted; re-export)")
    entry = parse_precision(manifest, dtype, GRAPH_NAMES, where)
    batch_invariant = manifest.get("batch_invariant", False)  # absent: exported before the option existed
    if not isinstance(batch_invariant, bool):
        raise EngineArtifactError(f"{where}: 'batch_invariant' must be true or false, got {batch_invariant!r}")
    for name, graph in graphs.items():  # the claims against what the graph files hold (a few ms per graph)
        ops = op_counts(path / graph.file)
        check_graph_precision(entry, name, ops, where)
        if batch_invariant and ops["Softmax"]:
            raise EngineArtifactError(f"{where}: claims batch_invariant, but graph {name!r} has {ops['Softmax']} "
                                      "Softmax node(s) (the invariant attention has none; re-export)")
    check_marker_ops(entry, where)
    return EngineDir(path, manifest, config, dtype, graphs, embeddings, entry, batch_invariant)


def check_graph_io(engine_dir: Path, entry: GraphEntry, inputs: Sequence[TensorSpec],
                   outputs: Sequence[TensorSpec]) -> None:
    """EngineArtifactError unless a loaded graph's real inputs/outputs equal the manifest's declaration."""
    for kind, declared, found in (("inputs", entry.inputs, inputs), ("outputs", entry.outputs, outputs)):
        if [s.name for s in declared] != [s.name for s in found]:
            raise EngineArtifactError(
                f"{engine_dir / entry.file}: graph {kind} {[s.name for s in found]} differ from the manifest's "
                f"{[s.name for s in declared]}")
        for want, got in zip(declared, found):
            if want != got:
                raise EngineArtifactError(f"{engine_dir / entry.file}: graph {kind[:-1]} {got.describe()} differs "
                                          f"from the manifest's {want.describe()}")


# ---------------------------------------------------------------------------------------------- parsing


def read_manifest(path: str | Path) -> dict[str, Any]:
    """An engine directory's manifest.json as a JSON object (export/ reads manifests through this too)."""
    return read_json_object(path, error=EngineArtifactError, what="manifest")


def _check_format(manifest: Mapping[str, Any], where: str) -> None:
    if manifest.get("format") != FORMAT_NAME:
        raise EngineArtifactError(f"{where}: 'format' is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    version = manifest.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        exporter = manifest.get("exporter") or {}
        made_by = exporter.get("version") if isinstance(exporter, Mapping) else None
        raise EngineArtifactError(
            f"{where}: exporter format version {version!r} (written by c4u_engine {made_by}) is not supported; "
            f"this c4u_engine reads format versions {list(SUPPORTED_FORMAT_VERSIONS)}: re-export with "
            f"c4u export")


def _check_model_facts(manifest: Mapping[str, Any], config: ModelConfig, where: str) -> None:
    model = manifest.get("model")
    if not isinstance(model, Mapping):
        raise EngineArtifactError(f"{where}: 'model' must be an object of model facts")
    text = config.text
    expected = {"num_layers": text.num_hidden_layers, "num_kv_heads": text.num_key_value_heads,
                "head_dim": text.head_dim, "hidden_size": text.hidden_size, "vocab_size": text.vocab_size,
                "image_token_id": config.image_token_id}
    for key, value in expected.items():
        if model.get(key) != value:
            raise EngineArtifactError(f"{where}: model.{key} is {model.get(key)!r} but config.json gives {value}")


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise EngineArtifactError(f"{where} must be a list of file names, got {value!r}")
    return value


def _require_file(root: Path, name: str, where: str) -> None:
    path = (root / name).resolve()
    if path.parent != root.resolve() or not path.is_file():
        raise EngineArtifactError(f"{where}: lists {name!r}, which is not a file in {root} (missing file)")


def _spec(value: Any, where: str) -> TensorSpec:
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str) or \
            not isinstance(value.get("dtype"), str) or not isinstance(value.get("shape"), list):
        raise EngineArtifactError(f"{where}: expected {{name, dtype, shape}}, got {value!r}")
    shape = value["shape"]
    if not all(d is None or (isinstance(d, (int, str)) and not isinstance(d, bool)) for d in shape):
        raise EngineArtifactError(f"{where}: shape dims must be ints, symbol names or null, got {shape!r}")
    return TensorSpec(value["name"], value["dtype"], tuple(shape))


def _graph_entry(name: str, value: Any, where: str) -> GraphEntry:
    if not isinstance(value, Mapping):
        raise EngineArtifactError(f"{where}: must be an object, got {value!r}")
    file, digest = value.get("file", f"{name}.onnx"), value.get("sha256")
    if not isinstance(file, str) or not isinstance(digest, str) or len(digest) != 64:
        raise EngineArtifactError(f"{where}: needs 'file' and a 64-hex-digit 'sha256', got {file!r}, {digest!r}")
    external = _str_list(value.get("external_data", []), f"{where}.external_data")
    for kind in ("inputs", "outputs"):
        if not isinstance(value.get(kind), list):
            raise EngineArtifactError(f"{where}: '{kind}' must be a list of {{name, dtype, shape}}")
    return GraphEntry(name, file, digest, tuple(external),
                      tuple(_spec(v, f"{where}.inputs[{i}]") for i, v in enumerate(value["inputs"])),
                      tuple(_spec(v, f"{where}.outputs[{i}]") for i, v in enumerate(value["outputs"])))


def _embedding_entry(value: Any, where: str) -> EmbeddingEntry:
    if not isinstance(value, Mapping):
        raise EngineArtifactError(f"{where}: must be an object with file, tensor, dtype, shape, sha256")
    try:
        shape = tuple(int(d) for d in value["shape"])
        entry = EmbeddingEntry(str(value["file"]), str(value["tensor"]), str(value["dtype"]), shape,
                               str(value["sha256"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineArtifactError(f"{where}: malformed ({exc!r}): {value!r}") from exc
    if len(shape) != 2:
        raise EngineArtifactError(f"{where}: shape must be [vocab, hidden], got {list(shape)}")
    return entry


def _check_contract(graphs: Mapping[str, GraphEntry], config: ModelConfig, dtype: str, where: str) -> None:
    """The declared I/O must be the runner contract: names in order, and the dtypes the runner feeds."""
    layers = config.text.num_hidden_layers
    wanted = {
        "vision": (list(VISION_INPUTS), list(VISION_OUTPUTS)),
        "decoder": (decoder_input_names(layers, decoder_takes_frozen(graphs["decoder"])),
                    decoder_output_names(layers)),
    }
    fixed_dtypes = {"pixel_patches": "float32", "cos": "float32", "sin": "float32", "window_index": "int64",
                    "reverse_index": "int64", "full_segments": "int64", "window_segments": "int64",
                    "position_ids": "int64", "attention_mask": "bool", "logits_index": "int64", "logits": "float32"}
    for name, (inputs, outputs) in wanted.items():
        entry = graphs[name]
        for kind, declared, names in (("inputs", entry.inputs, inputs), ("outputs", entry.outputs, outputs)):
            if [s.name for s in declared] != names:
                raise EngineArtifactError(
                    f"{where}: graphs.{name}.{kind} are {[s.name for s in declared]}; the runner contract for this "
                    f"config ({layers} layers) needs {names}")
            for spec in declared:
                want = fixed_dtypes.get(spec.name, dtype)
                if spec.dtype != want:
                    raise EngineArtifactError(f"{where}: graphs.{name} {kind[:-1]} {spec.describe()} must be {want}")
