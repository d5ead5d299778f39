"""The one reader of each shared artifact format, without torch: JSON objects (config.json, an engine directory's
manifest.json, index files) and safetensors headers. Checkpoint loading, engine directories, the onnxruntime
runner and export/ all read through here, so a malformed file fails the same way everywhere, with a typed error
(`error`, a C4UError subclass chosen by the caller: ModelFormatError for checkpoints, EngineArtifactError for
engine directories) naming the file and the problem.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c4u_engine.errors import C4UError, ModelFormatError

MAX_SAFETENSORS_HEADER_BYTES = 100 << 20  # safetensors' own limit


def read_json_object(path: str | Path, *, error: type[C4UError] = ModelFormatError, what: str = "file"
                     ) -> dict[str, Any]:
    """A JSON file whose top level is an object; `error` when it is missing, unreadable or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise error(f"{path}: {what} not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not a readable JSON {what} ({exc})") from exc
    if not isinstance(data, dict):
        raise error(f"{path}: the {what} must be a JSON object, found {type(data).__name__}")
    return data


@dataclass(frozen=True)
class SafetensorsHeader:
    """A safetensors file's header: tensor entries (name -> {"dtype", "shape", "data_offsets"}), the metadata
    block, and where the tensor bytes start (data_offsets are relative to it)."""

    tensors: dict[str, dict[str, Any]]
    metadata: dict[str, str]
    data_start: int


def read_safetensors_header(path: str | Path, *, error: type[C4UError] = ModelFormatError) -> SafetensorsHeader:
    """Parse the 8-byte length and the JSON header of a safetensors file (no tensor bytes are read)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
            if not 0 < length <= min(MAX_SAFETENSORS_HEADER_BYTES, size - 8):
                raise ValueError(f"header length {length} does not fit a file of {size} bytes")
            header = json.loads(f.read(length))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        for name, entry in header.items():
            offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
            if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]
                    and offsets[1] <= size - 8 - length and isinstance(entry.get("shape"), list)
                    and isinstance(entry.get("dtype"), str)):
                raise ValueError(f"tensor {name!r} has a malformed entry {entry!r}")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not a readable safetensors file ({exc})") from exc
    return SafetensorsHeader(header, metadata, 8 + length)
