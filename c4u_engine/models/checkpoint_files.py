"""The files of a checkpoint directory, without torch: which safetensors file holds which tensor, a cheap
fingerprint, and the refusal of pickle checkpoints.

safetensors only: pickle checkpoints (pytorch_model.bin, *.pt, *.pth, *.ckpt) can run arbitrary code when
loaded and are refused. Tensor names are accepted in both namings met in practice and normalised to this
package's module names:

    classic Hub files (what save_pretrained writes)   transformers' in-memory names     here
    visual.*                                          model.visual.*                   visual.*
    model.*                                           model.language_model.*           language.*
    lm_head.weight                                    lm_head.weight                   language.lm_head.weight
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from c4u_engine.errors import ModelFormatError
from c4u_engine.models.file_formats import read_json_object, read_safetensors_header

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
ENGINE_MANIFEST_FILE = "manifest.json"  # of an exported engine directory (c4u_engine/runners/engine_dir.py)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_RENAMES = (  # first matching prefix wins: the longer transformers names before the classic ones
    ("model.visual.", "visual."),
    ("model.language_model.", "language."),
    ("visual.", "visual."),
    ("model.", "language."),
    ("lm_head.", "language.lm_head."),
)


def internal_name(name: str) -> str | None:
    """This package's name for a checkpoint tensor name, or None for a name it does not know."""
    for prefix, replacement in _RENAMES:
        if name.startswith(prefix):
            return replacement + name[len(prefix) :]
    return None


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensor entries of a safetensors header: name -> {"dtype", "shape", "data_offsets"}."""
    return read_safetensors_header(path, error=ModelFormatError).tensors


def tensor_files(model_dir: str | Path) -> dict[str, Path]:
    """Checkpoint tensor name -> the safetensors file holding it, with the sharded index validated.

    model.safetensors wins over an index when both exist (as in transformers). Raises ModelFormatError for a
    missing directory or weights, pickle-only checkpoints, an index naming a missing shard or a path outside
    the directory, or an index that disagrees with the shards' contents.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFormatError(f"{model_dir}: checkpoint directory not found")
    single, index = model_dir / SINGLE_FILE, model_dir / INDEX_FILE
    if single.is_file():
        return {name: single for name in read_header(single)}
    if index.is_file():
        return _indexed_files(model_dir, index)
    pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelFormatError(
            f"{model_dir / pickles[0]}: pickle checkpoints are not loaded (unpickling can run arbitrary code); "
            f"found {pickles}. Convert the checkpoint to safetensors ({SINGLE_FILE} or {INDEX_FILE} + shards)."
        )
    raise ModelFormatError(f"{model_dir}: no {SINGLE_FILE} or {INDEX_FILE} found")


def _indexed_files(model_dir: Path, index: Path) -> dict[str, Path]:
    weight_map = read_json_object(index, error=ModelFormatError, what="safetensors index").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelFormatError(f"{index}: 'weight_map' must be a non-empty object of tensor name -> shard file")
    root = model_dir.resolve()
    shards: dict[str, Path] = {}
    for shard_name in sorted(set(map(str, weight_map.values()))):
        shard = (model_dir / shard_name).resolve()
        if shard.parent != root:
            raise ModelFormatError(f"{index}: shard {shard_name!r} is not a file directly inside {model_dir}")
        if not shard.is_file():
            raise ModelFormatError(f"{index}: lists shard {shard_name!r}, which does not exist in {model_dir}")
        shards[shard_name] = shard
    found: dict[str, Path] = {}
    for shard in shards.values():
        for name in read_header(shard):
            if name in found:
                raise ModelFormatError(f"{shard}: tensor {name!r} is also stored in {found[name].name}")
            found[name] = shard
    for name, shard_name in weight_map.items():
        if name not in found:
            raise ModelFormatError(f"{index}: tensor {name!r} is listed in shard {shard_name!r} but stored nowhere")
        if found[name] != shards[str(shard_name)]:
            raise ModelFormatError(
                f"{index}: tensor {name!r} is listed in shard {shard_name!r} but stored in {found[name].name}"
            )
    for name, shard in found.items():
        if name not in weight_map:
            raise ModelFormatError(f"{shard}: tensor {name!r} is not listed in {index.name}")
    return found


def checkpoint_fingerprint(model_dir: str | Path) -> str:
    """sha256 hex digest identifying a checkpoint, cheap enough to compute at every start (for cache keys).

    Hashes config.json, generation_config.json and the index when present, and for each safetensors file its
    name, size, header (names, dtypes, shapes, offsets) and three 64 KiB samples of the tensor bytes (start,
    middle, end), so that two fine-tunes of one architecture differ. Not a digest of every byte.
    An exported engine directory without safetensors (c4u export) answers its source checkpoint's
    fingerprint, which its manifest.json records.
    """
    model_dir = Path(model_dir)
    manifest = model_dir / ENGINE_MANIFEST_FILE
    if not (model_dir / SINGLE_FILE).is_file() and not (model_dir / INDEX_FILE).is_file() and manifest.is_file():
        return _manifest_fingerprint(manifest)
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, GENERATION_CONFIG_FILE, INDEX_FILE):
        path = model_dir / name
        if path.is_file():
            digest.update(f"{name}\0".encode() + path.read_bytes() + b"\0")
    for path in sorted(set(tensor_files(model_dir).values())):
        digest.update(_file_sample(path))
    return digest.hexdigest()


def _manifest_fingerprint(path: Path) -> str:
    manifest = read_json_object(path, error=ModelFormatError, what="engine manifest")
    source = manifest.get("source")
    fingerprint = source.get("fingerprint") if isinstance(source, dict) else None
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ModelFormatError(f"{path}: source.fingerprint must be a non-empty string, got {fingerprint!r}")
    return fingerprint


def _file_sample(path: Path, sample: int = 1 << 16) -> bytes:
    size = path.stat().st_size
    data_start = read_safetensors_header(path, error=ModelFormatError).data_start
    with path.open("rb") as f:
        f.seek(8)
        parts = [f"{path.name}\0{size}\0".encode(), f.read(data_start - 8)]
        for offset in (data_start, data_start + (size - data_start) // 2, max(data_start, size - sample)):
            f.seek(offset)
            parts.append(f.read(sample))
    return b"".join(parts)
