"""Calibration for int8 smoothing: what the activations entering each quantized MatMul look like on real calls.

The set: by default the package's synthetic generator (c4u_engine.data: creatives rendered at 224 px and the
profiles of their groups; nothing downloaded), or the user's own creatives (`--calibration DIR`: every image file
in DIR, in groups of 4, each group with a synthetic profile). Each group runs as a fast round-robin selection on
the fp32 engine, through the engine itself (so the calls are the ones serving makes: the system turn, the
profile, image A, image B), with the graphs' smoothing inputs added as extra outputs. Per activation it keeps the
per-channel max |x| over every real row (padding rows of a batch left out) and a fixed-size sample of rows (for
choosing alpha). The manifest records what was used (source, how many creatives and groups, image size, seed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from c4u_engine.errors import InvalidImageError, InvalidInputError
from c4u_engine.runners.onnxruntime_runner import OnnxRuntimeRunner

GROUP_SIZE = 4
SYNTHETIC_GROUPS = 8
SYNTHETIC_SIZE = 224
SYNTHETIC_SEED = 23
SAMPLE_ROWS = 1024  # rows kept per activation for choosing alpha
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class CalibrationSet:
    """Groups of (creatives, profile) and the manifest's record of them."""

    groups: list[tuple[list[Any], Any]]
    record: dict[str, Any]


@dataclass
class ActivationStats:
    """Per-channel max |x| over every row seen, and a random sample of rows."""

    amax: np.ndarray
    rows: list[np.ndarray] = field(default_factory=list)
    seen: int = 0

    def sample(self) -> np.ndarray:
        rows = np.concatenate(self.rows) if self.rows else np.zeros((0, self.amax.size), np.float32)
        if len(rows) > SAMPLE_ROWS:
            rows = rows[np.random.default_rng(0).choice(len(rows), SAMPLE_ROWS, replace=False)]
        return rows


def synthetic_set(groups: int = SYNTHETIC_GROUPS, size: int = SYNTHETIC_SIZE, seed: int = SYNTHETIC_SEED
                  ) -> CalibrationSet:
    """Creatives and profiles from the package's generator (c4u_engine.data)."""
    from c4u_engine.data.creatives import render
    from c4u_engine.data.pairs import sample_group
    from c4u_engine.profile import Profile

    out = []
    for i in range(groups):
        group = sample_group(np.random.default_rng([seed, i]), GROUP_SIZE)
        out.append(([render(s, size) for s in group.specs],
                    Profile(title=group.product.title, queries=group.profile.queries)))
    return CalibrationSet(out, {"source": "synthetic", "generator": "c4u_engine.data", "groups": groups,
                                "creatives": groups * GROUP_SIZE, "image_px": size, "seed": seed,
                                "selection": "fast, round robin"})


def synthetic_profiles(n: int, seed: int = SYNTHETIC_SEED) -> list[Any]:
    """n user profiles (a product title and search queries) from the package's generator."""
    from c4u_engine.data.catalog import sample_product, sample_profile
    from c4u_engine.profile import Profile

    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        product = sample_product(rng)
        out.append(Profile(title=product.title, queries=sample_profile(rng, product.category).queries))
    return out


def directory_set(directory: str | Path, seed: int = SYNTHETIC_SEED) -> CalibrationSet:
    """The user's creatives: every readable image in `directory` (not recursive), in groups of GROUP_SIZE, each
    with a synthetic profile. InvalidInputError naming the directory when it holds no usable image."""
    from c4u_engine.imaging import load_image

    path = Path(directory)
    if not path.is_dir():
        raise InvalidInputError(f"calibration directory {path} does not exist or is not a directory")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    images, unreadable = [], []
    for file in files:
        try:
            images.append(load_image(file).pixels)
        except InvalidImageError:
            unreadable.append(file.name)
    if not images:
        found = f"{len(files)} image file(s), none readable ({', '.join(unreadable[:5])})" if files else \
            f"no file ending in {', '.join(IMAGE_SUFFIXES)}"
        raise InvalidInputError(f"calibration directory {path} holds no usable image: {found}")
    if len(images) < 2:
        raise InvalidInputError(f"calibration directory {path} holds 1 usable image; a comparison needs at least 2")
    profiles = synthetic_profiles(-(-len(images) // GROUP_SIZE), seed)
    groups: list[tuple[list[Any], Any]] = []
    for i in range(0, len(images), GROUP_SIZE):
        chunk = images[i:i + GROUP_SIZE]
        if len(chunk) < 2:  # a last single image joins the group before it
            groups[-1][0].append(chunk[0])
            continue
        groups.append((chunk, profiles[i // GROUP_SIZE]))
    return CalibrationSet(groups, {"source": "directory", "groups": len(groups), "creatives": len(images),
                                   "unreadable_files": len(unreadable), "seed": seed,
                                   "selection": "fast, round robin"})


class _RecordingSession:
    """An onnxruntime session over a graph with extra outputs: returns the original outputs, records the extras."""

    def __init__(self, session: Any, n_outputs: int, names: Sequence[str], stats: dict[str, ActivationStats],
                 masked: bool, rng: np.random.Generator) -> None:
        self._session, self._n, self._names, self._stats = session, n_outputs, list(names), stats
        self._masked, self._rng = masked, rng

    def run(self, output_names, feeds):
        out = self._session.run(None, feeds)
        valid = None
        if self._masked:  # decoder: the new positions' mask columns say which rows are real tokens
            b, s = feeds["inputs_embeds"].shape[:2]
            valid = np.asarray(feeds["attention_mask"])[:, -s:].reshape(b * s) if s else None
        for name, value in zip(self._names, out[self._n:]):
            rows = value.reshape(-1, value.shape[-1]).astype(np.float32)
            if valid is not None and len(rows) == len(valid):
                rows = rows[valid]
            if not len(rows):
                continue
            st = self._stats.setdefault(name, ActivationStats(np.zeros(rows.shape[1], np.float32)))
            np.maximum(st.amax, np.abs(rows).max(axis=0), out=st.amax)
            take = min(len(rows), 128)
            st.rows.append(rows[self._rng.choice(len(rows), take, replace=False)])
            st.seen += len(rows)
        return out[: self._n]  # the runner asks for every output (output_names None)


class CalibrationRunner(OnnxRuntimeRunner):
    """The fp32 onnxruntime runner whose sessions also return the named activations (graph -> tensor names)."""

    def __init__(self, engine_dir: str | Path, tensors: Mapping[str, Iterable[str]]) -> None:
        self._tensors = {g: list(names) for g, names in tensors.items()}
        self.stats: dict[str, dict[str, ActivationStats]] = {g: {} for g in self._tensors}
        self._rng = np.random.default_rng(0)
        super().__init__(engine_dir, intra_op_threads=None)

    def _session(self, graph: str, options: Any = None) -> Any:
        path = self.engine_dir.graph_path(graph)
        model = onnx.load(str(path))
        n = len(model.graph.output)
        names = self._tensors.get(graph, [])
        for name in names:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        session = self._ort.InferenceSession(model.SerializeToString(), sess_options=options or self._options,
                                             providers=self.providers)
        return _RecordingSession(session, n, names, self.stats.setdefault(graph, {}), graph == "decoder", self._rng)


def collect(engine_dir: str | Path, tensors: Mapping[str, Iterable[str]], calibration: CalibrationSet
            ) -> dict[str, dict[str, ActivationStats]]:
    """Run the calibration set through the fp32 engine at engine_dir and return graph -> activation -> stats."""
    from c4u_engine.api import Engine

    runner = CalibrationRunner(engine_dir, tensors)
    engine = Engine(runner.engine_dir.path, runner=runner, lanes=1)
    try:
        for images, profile in calibration.groups:
            engine.select(images, profile, mode="fast", strategy="round_robin", use_cache=False)
    finally:
        engine.close()
    missing = [(g, t) for g, names in tensors.items() for t in names if t not in runner.stats.get(g, {})]
    if missing:
        raise InvalidInputError(f"calibration saw no rows for {missing[:3]} (the calibration set is too small)")
    return runner.stats
