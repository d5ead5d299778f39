"""TensorRT optimization profiles: per graph input, the min/opt/max shapes an engine accepts.

Manifest schema (``manifest.json`` of an engine directory, key ``"profiles"``)::

    "profiles": {
      "decoder": [                                  # graph name -> TensorRT profiles, in index order
        {"name": "prefill",                         # unique within the graph; runners pick profiles by name
         "shapes": {
           "inputs_embeds": {"min": [1, 1, 1536], "opt": [4, 512, 1536], "max": [8, 2048, 1536]},
           "position_ids":  {"min": [3, 1, 1],    "opt": [3, 4, 512],    "max": [3, 8, 2048]},
           ...
         }},
        {"name": "decode", "shapes": {...}}
      ],
      "vision": [{"name": "images", "shapes": {"pixel_patches": {...}}}]
    }

Rules (checked by :func:`validate_profiles` against the graph's inputs):
- every graph input with a dynamic dimension appears in every profile of its graph; static inputs may be omitted;
- each shape has the graph input's rank; static dimensions equal the graph's in min, opt and max;
- ``0 <= min <= opt <= max`` per axis (0 is legal: an empty past KV cache at prefill);
- dimensions that share a symbolic name in the graph (``"batch"`` in ``inputs_embeds`` axis 0 and
  ``position_ids`` axis 1) have equal min, equal opt and equal max within a profile.
Malformed JSON (missing keys, non-integers, ranks that differ between min/opt/max) raises at parse time;
everything else is collected as a list of problems so that a check can report all of them at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from c4u_engine.errors import EngineArtifactError

# A graph input's dims as ONNX declares them: an int (static), a symbol name (str) or None (anonymous dynamic).
GraphDim = Union[int, str, None]


@dataclass(frozen=True)
class ShapeRange:
    """min/opt/max shapes of one input in one profile (same rank, plain ints)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class ShapeProfile:
    """One TensorRT optimization profile: a name and a ShapeRange per input name."""

    name: str
    shapes: Mapping[str, ShapeRange]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shapes": {k: v.to_json() for k, v in self.shapes.items()}}


def _int_list(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in value
    ):
        raise EngineArtifactError(f"{where}: expected a list of ints, got {value!r}")
    return tuple(value)


def shape_range_from_json(data: Any, where: str) -> ShapeRange:
    """Parse {"min": [...], "opt": [...], "max": [...]}; `where` names the place for error messages."""
    if not isinstance(data, Mapping) or set(data) != {"min", "opt", "max"}:
        raise EngineArtifactError(f"{where}: expected an object with keys min, opt, max, got {data!r}")
    rng = ShapeRange(*(_int_list(data[k], f"{where}.{k}") for k in ("min", "opt", "max")))
    if not len(rng.min) == len(rng.opt) == len(rng.max):
        raise EngineArtifactError(f"{where}: min, opt and max have different ranks: {rng.to_json()}")
    return rng


def profile_from_json(data: Any, where: str) -> ShapeProfile:
    """Parse one {"name": ..., "shapes": {...}} profile."""
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str) or not data["name"]:
        raise EngineArtifactError(f"{where}: a profile needs a non-empty string 'name', got {data!r}")
    shapes = data.get("shapes")
    if not isinstance(shapes, Mapping) or not shapes:
        raise EngineArtifactError(f"{where} ({data['name']}): 'shapes' must be a non-empty object")
    where = f"{where} ({data['name']})"
    return ShapeProfile(data["name"], {k: shape_range_from_json(v, f"{where}.shapes.{k}") for k, v in shapes.items()})


def profiles_from_manifest(manifest: Mapping[str, Any]) -> dict[str, tuple[ShapeProfile, ...]]:
    """Read ``manifest["profiles"]``: graph name -> profiles in TensorRT index order."""
    section = manifest.get("profiles")
    if not isinstance(section, Mapping):
        raise EngineArtifactError(f"manifest: 'profiles' must be an object of graph name -> list, got {section!r}")
    out: dict[str, tuple[ShapeProfile, ...]] = {}
    for graph, entries in section.items():
        if not isinstance(entries, list) or not entries:
            raise EngineArtifactError(f"manifest: profiles.{graph} must be a non-empty list, got {entries!r}")
        out[graph] = tuple(profile_from_json(e, f"manifest: profiles.{graph}[{i}]") for i, e in enumerate(entries))
    return out


def profiles_to_json(profiles: Mapping[str, Sequence[ShapeProfile]]) -> dict[str, list[dict[str, Any]]]:
    """The inverse of :func:`profiles_from_manifest`: the JSON value of ``manifest["profiles"]``."""
    return {graph: [p.to_json() for p in ps] for graph, ps in profiles.items()}


def is_dynamic(dims: Sequence[GraphDim]) -> bool:
    return any(not isinstance(d, int) or d < 0 for d in dims)


def validate_profiles(
    graph: str, profiles: Sequence[ShapeProfile], inputs: Mapping[str, Sequence[GraphDim]]
) -> list[str]:
    """Every problem of `profiles` against the graph inputs `inputs` (name -> dims), as messages."""
    problems: list[str] = []
    dynamic = [name for name, dims in inputs.items() if is_dynamic(dims)]
    if not profiles:
        if dynamic:
            problems.append(
                f"{graph}: graph inputs with dynamic dimensions have no optimization profile: "
                f"{', '.join(f'{n}{_fmt_dims(inputs[n])}' for n in dynamic)}"
            )
        return problems
    seen: set[str] = set()
    for profile in profiles:
        where = f"{graph}: profile '{profile.name}'"
        if profile.name in seen:
            problems.append(f"{where}: duplicate profile name")
        seen.add(profile.name)
        for name in dynamic:
            if name not in profile.shapes:
                problems.append(f"{where}: graph input '{name}'{_fmt_dims(inputs[name])} has dynamic dimensions "
                                f"but no min/opt/max shapes")
        symbols: dict[str, list[tuple[str, int, tuple[int, int, int]]]] = {}
        for name, rng in profile.shapes.items():
            if name not in inputs:
                problems.append(f"{where}: '{name}' is not a graph input (inputs: {', '.join(inputs) or 'none'})")
                continue
            problems += _check_input(where, name, rng, inputs[name], symbols)
        for symbol, uses in symbols.items():
            if len({u[2] for u in uses}) > 1:
                detail = "; ".join(f"{n} axis {a}: min/opt/max {v[0]}/{v[1]}/{v[2]}" for n, a, v in uses)
                problems.append(f"{where}: dimension '{symbol}' is shared but its ranges differ: {detail}")
    return problems


def _check_input(where: str, name: str, rng: ShapeRange, dims: Sequence[GraphDim],
                 symbols: dict[str, list[tuple[str, int, tuple[int, int, int]]]]) -> list[str]:
    problems: list[str] = []
    if len(rng.min) != len(dims):
        return [f"{where}: '{name}' has rank {len(dims)} {_fmt_dims(dims)} in the graph but rank {len(rng.min)} "
                f"in the profile {rng.to_json()}"]
    for axis, dim in enumerate(dims):
        lo, opt, hi = rng.min[axis], rng.opt[axis], rng.max[axis]
        if not 0 <= lo <= opt <= hi:
            problems.append(f"{where}: '{name}' axis {axis}: needs 0 <= min <= opt <= max, got "
                            f"min={lo} opt={opt} max={hi}")
        if isinstance(dim, int) and dim >= 0:
            if not lo == opt == hi == dim:
                problems.append(f"{where}: '{name}' axis {axis} is static ({dim}) in the graph but the profile has "
                                f"min={lo} opt={opt} max={hi}")
        elif isinstance(dim, str) and dim:
            symbols.setdefault(dim, []).append((name, axis, (lo, opt, hi)))
    return problems


def _fmt_dims(dims: Sequence[GraphDim]) -> str:
    return "[" + ", ".join("?" if d is None or d == "" else str(d) for d in dims) + "]"
