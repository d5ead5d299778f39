"""Which operators an ONNX file's graph holds, read without the onnx package (the CPU runtime does not carry it).

An engine directory's manifest claims a precision (runners/precision.py); this census is what the claim is checked
against. It walks protobuf's wire format over a memory map of the file: ModelProto.graph (field 7) ->
GraphProto.node (field 1) -> NodeProto.op_type (field 4). Initializers are skipped by their length prefix, never
copied, so a graph with gigabytes of inline weights costs a page walk, not a parse. Only the main graph's nodes
are counted (not the bodies of If/Loop attributes: the exported graphs have none).
"""

from __future__ import annotations

import mmap
from collections import Counter
from pathlib import Path

from c4u_engine.errors import EngineArtifactError

_MODEL_GRAPH, _GRAPH_NODE, _NODE_OP_TYPE = 7, 1, 4
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def op_counts(path: str | Path) -> Counter[str]:
    """op_type -> number of nodes in the file's main graph. EngineArtifactError if it is not a readable ONNX file."""
    path = Path(path)
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                return _count(view)
            finally:
                view.release()
    except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped, or malformed wire data
        raise EngineArtifactError(f"{path}: not a readable ONNX model ({exc})") from exc


def _count(buf: memoryview) -> Counter[str]:
    ops: Counter[str] = Counter()
    graphs = [(s, e) for field, s, e in _fields(buf, 0, len(buf)) if field == _MODEL_GRAPH]
    if not graphs:
        raise ValueError("no graph in the model")
    for g_start, g_end in graphs:  # protobuf merges repeated occurrences of a message field
        for field, n_start, n_end in _fields(buf, g_start, g_end):
            if field != _GRAPH_NODE:
                continue
            for node_field, s, e in _fields(buf, n_start, n_end):
                if node_field == _NODE_OP_TYPE:
                    ops[bytes(buf[s:e]).decode("utf-8")] += 1
    return ops


def _fields(buf: memoryview, pos: int, end: int):
    """(field number, start, end) of each length-delimited field in buf[pos:end]; other wire types skipped."""
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, pos = _varint(buf, pos)
        elif wire == _FIXED64:
            pos += 8
        elif wire == _FIXED32:
            pos += 4
        elif wire == _LENGTH:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError(f"field {field} runs past its message ({pos + length} > {end})")
            yield field, pos, pos + length
            pos += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} at byte {pos}")
    if pos != end:
        raise ValueError(f"truncated message (ends at {pos}, expected {end})")


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
