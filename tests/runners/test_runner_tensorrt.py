"""TensorRTRunner, in three layers:

1. everywhere: profile choice and batch splitting against the profiles export writes, sidecar refusals, backend
   selection reasons, the refusal without tensorrt;
2. everywhere: the runner's whole path (plan checks, I/O binding, profile switching, chunking, KV plumbing, the
   Engine on top) against the torch runner, through a stand-in `tensorrt` module that runs each "plan" (a JSON
   pointer to its ONNX graph) with onnxruntime on host memory and enforces the profile ranges and non-null
   addresses the way TensorRT does. It checks our plumbing, not TensorRT;
3. marked `tensorrt` (a GPU with tensorrt importable): plans built by export.build_tensorrt, compared with torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.machinery
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[2]))  # `import export` (a repo-level package, not installed)

from tiny_checkpoint import make_test_image  # noqa: E402

import c4u_engine.runners as runners  # noqa: E402
from c4u_engine.api import Engine  # noqa: E402
from c4u_engine.errors import (BackendUnavailableError, EngineArtifactError, InvalidInputError,  # noqa: E402
                               LimitExceededError)
from c4u_engine.models.config import ModelConfig  # noqa: E402
from c4u_engine.runners import available_backends, create_runner, tensorrt_runner  # noqa: E402
from c4u_engine.runners.base import split_by_budget  # noqa: E402
from c4u_engine.runners.tensorrt_plan import check_sidecar, load_plan, plan_bytes_problems, read_profiles  # noqa: E402
from c4u_engine.runners.tensorrt_runner import (TensorRTRunner, decoder_chunks, sequence_pieces,  # noqa: E402
                                                vision_calls)
from c4u_engine.runners.torch_runner import TorchRunner  # noqa: E402
from export.manifest import ProfileLimits, decoder_profiles, vision_profiles  # noqa: E402
from export.onnx_export import export_engine  # noqa: E402
from export.profiles import profiles_to_json  # noqa: E402

TOL = 1e-4
PROFILE = {"title": "Trail running shoes", "queries": ["waterproof shoes", "running sale"]}
# Small limits so that ordinary calls need chunks: prefill rows <= 2, decode rows <= 3, context <= 512.
LIMITS = ProfileLimits(max_prefill_batch=2, max_decode_batch=3, max_prefill_tokens=256, max_context=512,
                       max_vision_images=1)
FAKE_VERSION = "10.99.0.1"
FAKE_GPU = ("Stand-in GPU", (9, 0))


def _quiet(message: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------- 1. pure logic
@pytest.fixture(scope="module")
def config(tiny_ckpt) -> ModelConfig:
    return ModelConfig.from_json(tiny_ckpt / "config.json")


@pytest.fixture(scope="module")
def decoder(config):
    manifest = {"profiles": profiles_to_json({"decoder": decoder_profiles(config, LIMITS)})}
    return read_profiles(manifest, "decoder")


def test_prefill_and_decode_pick_their_profiles(decoder, config):
    assert [p.name for p in decoder] == ["prefill", "decode"]
    assert decoder_chunks(decoder, config, 2, 40, 0, 1) == [(0, 2, 0)]
    assert decoder_chunks(decoder, config, 3, 1, 40, 1) == [(0, 3, 1)]
    assert decoder_chunks(decoder, config, 1, 1, 40, 1) == [(0, 1, 1)]  # prefill holds it too; decode is nearer
    assert decoder_chunks(decoder, config, 1, 1, 0, 1) == [(0, 1, 0)]  # no past: only prefill holds it
    assert decoder_chunks(decoder, config, 2, 4, 300, 2) == [(0, 2, 0)]  # a few tokens after a long prefix


def test_batches_over_every_profile_split_into_even_chunks(decoder, config):
    assert decoder_chunks(decoder, config, 5, 17, 0, 2) == [(0, 2, 0), (2, 4, 0), (4, 5, 0)]
    # decode holds 3 rows: 7 rows run as 3 + 2 + 2 on it, never on prefill's 2-row chunks
    assert decoder_chunks(decoder, config, 7, 1, 20, 1) == [(0, 3, 1), (3, 5, 1), (5, 7, 1)]


def test_long_prompts_run_as_sequence_pieces(decoder):
    assert sequence_pieces(decoder, 256) == [(0, 256)]
    assert sequence_pieces(decoder, 301) == [(0, 151), (151, 301)]
    assert sequence_pieces(decoder, 1) == [(0, 1)]


def test_a_row_that_fits_no_profile_names_the_limit(decoder, config):
    with pytest.raises(LimitExceededError, match=r"context \(past \+ new tokens\) \(attention_mask axis 1\) is "
                                                 r"513, the profile allows 1\.\.512"):
        decoder_chunks(decoder, config, 1, 13, 500, 1)
    with pytest.raises(LimitExceededError, match=r"new tokens per call .* is 300, the profile allows 1\.\.256"):
        decoder_chunks(decoder, config, 4, 300, 0, 1)
    with pytest.raises(LimitExceededError, match="profile 'decode': context"):
        decoder_chunks(decoder, config, 1, 1, 512, 1)


def test_vision_calls_group_images_up_to_the_profile(config, tiny_ckpt):
    from c4u_engine.ops.preprocess_params import PreprocessParams

    params = PreprocessParams.from_preprocessor_config(tiny_ckpt / "preprocessor_config.json")
    profiles = read_profiles({"profiles": profiles_to_json({"vision": vision_profiles(config, params, LIMITS)})},
                             "vision")
    most = profiles[0].shapes["pixel_patches"][2][0]
    calls = vision_calls(profiles, config, np.array([16, 24, most, 8]))
    assert [(g.start, g.stop, i) for g, i in calls] == [(0, 2, 0), (2, 3, 0), (3, 4, 0)]
    with pytest.raises(LimitExceededError, match=f"an image of {most + 4} patches .* pixel_patches axis 0"):
        vision_calls(profiles, config, np.array([16, most + 4]))


def test_split_by_budget():
    assert [(g.start, g.stop) for g in split_by_budget([60, 56, 24, 100, 4], 80)] == [(0, 1), (1, 3), (3, 4), (4, 5)]
    assert [(g.start, g.stop) for g in split_by_budget([4, 4], 80)] == [(0, 2)]


def _meta(**changes):
    meta = {"format": 1, "graph": "decoder", "tensorrt_version": "10.15.1.29",
            "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]},
            "onnx": {"file": "decoder.onnx", "sha256": "aa"}, "profiles": [{"name": "p", "shapes": {}}]}
    return {**meta, **changes}


def test_sidecar_mismatches_are_named():
    here = dict(tensorrt_version="10.15.1.29", gpu_name="NVIDIA H100 80GB HBM3", compute_capability=[9, 0],
                expected_onnx_sha256="aa", expected_profiles=[{"name": "p", "shapes": {}}], graph="decoder")
    assert check_sidecar(_meta(), **here) == []
    assert check_sidecar(_meta(graph="vision"), **here) == ["it is the plan of graph 'vision', expected 'decoder'"]
    assert check_sidecar(_meta(), **{**here, "gpu_name": "NVIDIA A100-SXM4-80GB", "compute_capability": (8, 0)}) \
        == ["built for NVIDIA H100 80GB HBM3 (compute capability [9, 0]), this GPU is NVIDIA A100-SXM4-80GB ([8, 0])"]
    assert plan_bytes_problems(b"", _meta()) == ["the engine file is missing or empty"]
    assert "sha256 differs from the sidecar" in plan_bytes_problems(b"x", _meta(engine_sha256="0" * 64))[0]
    assert plan_bytes_problems(b"x", _meta(engine_sha256=hashlib.sha256(b"x").hexdigest())) == []


def test_backend_reasons(tmp_path, monkeypatch):
    engine_dir = tmp_path / "onnx"
    engine_dir.mkdir()
    (engine_dir / "manifest.json").write_text("{}")
    assert available_backends(tmp_path, "cuda")["tensorrt"] is not None
    monkeypatch.setattr(runners, "_has", lambda module: True)
    assert available_backends(tmp_path, "cpu")["tensorrt"] == "tensorrt runs on CUDA devices only"
    reason = available_backends(tmp_path, "cuda")["tensorrt"]
    assert "missing vision.plan, vision.plan.json, decoder.plan, decoder.plan.json" in reason
    assert f"python -m export.build_tensorrt {engine_dir}" in reason
    assert "python -m export" in available_backends(tmp_path / "nothing", "cuda")["tensorrt"]
    for graph in ("vision", "decoder"):
        (engine_dir / f"{graph}.plan").write_bytes(b"plan")
        (engine_dir / f"{graph}.plan.json").write_text("{}")
    assert available_backends(tmp_path, "cuda")["tensorrt"] is None
    assert available_backends(engine_dir, "cuda:1")["tensorrt"] is None  # the engine directory itself
    monkeypatch.setattr(runners, "_has", lambda module: module != "tensorrt")
    assert available_backends(tmp_path, "cuda")["tensorrt"].startswith("tensorrt is not installed")


def test_auto_moves_past_plans_that_do_not_load_here(tmp_path, monkeypatch):
    made = []

    def create(name, model_dir, device, dtype, precision, intra_op_threads=None, lone_threads=None):
        made.append(name)
        if name == "tensorrt":
            raise EngineArtifactError("decoder.plan: refusing to load: built for another GPU")
        return name

    (tmp_path / "config.json").write_text("{}")  # a checkpoint directory as far as create_runner checks
    monkeypatch.setattr(runners, "available_backends", lambda d, dev, precision: dict.fromkeys(runners.BACKENDS[1:]))
    monkeypatch.setattr(runners, "_create", create)
    assert create_runner(tmp_path, backend="auto", device="cuda") == "onnxruntime" and made == ["tensorrt",
                                                                                               "onnxruntime"]
    with pytest.raises(EngineArtifactError, match="another GPU"):  # asked for by name: the refusal itself
        create_runner(tmp_path, backend="tensorrt", device="cuda")


def test_without_tensorrt_the_runner_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now raises ImportError
    (tmp_path / "config.json").write_text("{}")  # past create_runner's checkpoint check, to the runtime's own
    with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
        TensorRTRunner(tmp_path)
    with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
        create_runner(tmp_path, backend="tensorrt", device="cuda")


# ---------------------------------------------------------------------------------------------- 2. stand-in
_ORT_TYPES = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(int64)": "INT64", "tensor(bool)": "BOOL"}
_NP_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT64": np.int64, "BOOL": np.bool_}


def _host_array(address: int, shape, dtype) -> np.ndarray:
    """A numpy view of host memory at `address` (torch CPU tensors stand in for device buffers)."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if n == 0:
        return np.zeros(shape, dtype)
    return np.frombuffer((ctypes.c_ubyte * n).from_address(address), dtype=dtype).reshape(shape)


class _Logger:
    def __init__(self) -> None:
        pass


class _Engine:
    """A 'deserialized plan': the ONNX graph on onnxruntime, with the plan's profiles."""

    def __init__(self, spec: dict) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(spec["onnx"], providers=["CPUExecutionProvider"])
        self.profiles = spec["profiles"]
        args = [*self.session.get_inputs(), *self.session.get_outputs()]
        n_in = len(self.session.get_inputs())
        self.modes = {a.name: "INPUT" if i < n_in else "OUTPUT" for i, a in enumerate(args)}
        self.dtypes = {a.name: _ORT_TYPES[a.type] for a in args}
        self.names = list(self.modes)
        self.num_io_tensors = len(self.names)
        self.num_optimization_profiles = len(self.profiles)
        self.calls: list[tuple[str, tuple]] = []  # (profile name, first input's shape) per execute

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return self.modes[name]

    def get_tensor_dtype(self, name):
        return self.dtypes[name]

    def get_tensor_profile_shape(self, name, index):
        rng = self.profiles[index]["shapes"][name]
        return [rng["min"], rng["opt"], rng["max"]]

    def create_execution_context(self):
        return _Context(self)


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine, self.profile, self.shapes, self.addresses, self.results = engine, None, {}, {}, None

    def set_optimization_profile_async(self, index, stream):
        assert 0 <= index < self.engine.num_optimization_profiles
        self.profile = index
        return True

    def set_input_shape(self, name, shape):
        rng = self.engine.profiles[self.profile]["shapes"].get(name)
        if rng is not None and (len(shape) != len(rng["min"]) or
                                not all(a <= s <= b for a, s, b in zip(rng["min"], shape, rng["max"]))):
            return False  # as TensorRT: outside the selected profile
        self.shapes[name], self.results = tuple(shape), None
        return True

    def set_tensor_address(self, name, address):
        assert address, f"{name}: TensorRT needs a real address, even for an empty tensor"
        self.addresses[name] = address
        if self.engine.modes[name] == "INPUT":
            self.results = None

    def _run(self):
        if self.results is None:
            feeds = {n: np.array(_host_array(self.addresses[n], self.shapes[n], _NP_TYPES[self.engine.dtypes[n]]))
                     for n, m in self.engine.modes.items() if m == "INPUT"}
            outputs = [n for n, m in self.engine.modes.items() if m == "OUTPUT"]
            self.results = dict(zip(outputs, self.engine.session.run(outputs, feeds)))
        return self.results

    def get_tensor_shape(self, name):
        return self._run()[name].shape

    def execute_async_v3(self, stream):
        for name, value in self._run().items():
            _host_array(self.addresses[name], value.shape, value.dtype)[...] = value
        self.engine.calls.append((self.engine.profiles[self.profile]["name"], self.shapes[self.engine.names[0]]))
        return True


class _Runtime:
    def __init__(self, logger) -> None:
        pass

    def deserialize_cuda_engine(self, plan: bytes):
        return _Engine(json.loads(plan))


def _stand_in_tensorrt() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = FAKE_VERSION
    trt.ILogger, trt.Runtime = _Logger, _Runtime
    trt.DataType = types.SimpleNamespace(**{k: k for k in ("FLOAT", "HALF", "BF16", "INT32", "INT64", "INT8",
                                                          "UINT8", "BOOL")})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.init_libnvinfer_plugins = lambda logger, namespace: True
    return trt


class _HostPlacement:
    """CudaPlacement's interface on the host: CPU tensors, no stream."""

    def __init__(self, device: str = "cuda", stream=None) -> None:
        if not str(device).startswith("cuda"):
            raise BackendUnavailableError(f"tensorrt runs on CUDA devices only, got device {device!r}")
        self.torch, self.device, self.index, self.handle = torch, torch.device("cpu"), 0, 0
        self._scratch = torch.empty(256, dtype=torch.uint8)

    def gpu(self):
        return FAKE_GPU

    @contextlib.contextmanager
    def active(self):
        yield

    def scratch_address(self):
        return self._scratch.data_ptr()

    def keep_until_done(self, tensor):
        pass


def write_stand_in_plans(engine_dir: Path, gpu=FAKE_GPU, version: str = FAKE_VERSION) -> None:
    """vision.plan / decoder.plan for the stand-in, with sidecars as export.build_tensorrt writes them."""
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    for graph in ("vision", "decoder"):
        entry = manifest["graphs"][graph]
        plan = json.dumps({"onnx": str(engine_dir / entry["file"]), "profiles": manifest["profiles"][graph]}).encode()
        (engine_dir / f"{graph}.plan").write_bytes(plan)
        meta = {"format": 1, "graph": graph, "engine_sha256": hashlib.sha256(plan).hexdigest(),
                "tensorrt_version": version, "gpu": {"name": gpu[0], "compute_capability": list(gpu[1])},
                "precision": "fp32", "fp8": False, "strongly_typed": True, "builder_optimization_level": 0,
                "onnx": {"file": entry["file"], "sha256": entry["sha256"]}, "profiles": manifest["profiles"][graph],
                "build_seconds": 0.0}
        (engine_dir / f"{graph}.plan.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def ckpt_with_plans(tiny_ckpt, tmp_path_factory):
    """A private copy of the default checkpoint, exported with LIMITS into <ckpt>/onnx, with stand-in plans."""
    ckpt = tmp_path_factory.mktemp("trt_default") / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    export_engine(ckpt, limits=LIMITS, log=_quiet)
    write_stand_in_plans(ckpt / "onnx")
    return ckpt


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _stand_in_tensorrt())
    monkeypatch.setattr(tensorrt_runner, "CudaPlacement", _HostPlacement)


@pytest.fixture
def engine_copy(ckpt_with_plans, tmp_path):
    copy = tmp_path / "engine"
    shutil.copytree(ckpt_with_plans / "onnx", copy)
    write_stand_in_plans(copy)  # the plans point at this copy's graphs
    return copy


def _close(a, b, what: str, tol: float = TOL) -> None:
    a = a.float().cpu().numpy() if hasattr(a, "cpu") else np.asarray(a, np.float32)
    b = b.float().cpu().numpy() if hasattr(b, "cpu") else np.asarray(b, np.float32)
    assert a.shape == b.shape, f"{what}: {a.shape} vs {b.shape}"
    err = float(np.abs(a - b).max()) if a.size else 0.0
    assert err <= tol, f"{what}: max abs difference {err}"


def _close_kv(ours, ref, what: str, tol: float = TOL) -> None:
    n = ref.length  # the torch runner's buffers may hold spare capacity after the filled slots
    for i, (k, v) in enumerate(zip(ours.keys, ours.values)):
        _close(k, ref.keys[i][:, :, :n], f"{what} key {i}", tol)
        _close(v, ref.values[i][:, :, :n], f"{what} value {i}", tol)


def check_against_torch(ours: TensorRTRunner, ref: TorchRunner, tol: float = TOL) -> None:
    """Vision, prefill (5 rows: more than one profile holds), decode, kv_select + prefill, kv_stack."""
    rng = np.random.default_rng(2)
    grid = np.array([[1, 4, 6], [1, 8, 8], [1, 2, 4]])  # 24 + 64 + 8 patches: three vision calls of <= 64
    pixels = rng.standard_normal((96, 1176)).astype(np.float32)
    img_o, img_t = ours.encode_images(pixels, grid), ref.encode_images(pixels, grid)
    for a, b in zip(img_o, img_t):
        _close(a, b, f"vision grid {grid.tolist()}", tol)
    b, s = 5, 17
    ids = rng.integers(0, 400, size=(b, s))
    ids[0, 4:10] = ours.image_token_id  # image 0's 6 tokens in row 0, image 2's 2 tokens in row 3
    ids[3, 2:4] = ours.image_token_id
    pos = np.broadcast_to(np.arange(s), (3, b, s)).copy()
    mask = np.ones((b, s), bool)
    mask[1, :3] = False  # left padding in row 1
    index = np.array([[16, 9], [16, 3], [16, 0], [2, 16], [5, 5]])
    emb_o, emb_t = ours.embed(ids, [img_o[0], img_o[2]]), ref.embed(ids, [img_t[0], img_t[2]])
    _close(emb_o, emb_t, "embed with images", tol)
    logits_o, kv_o = ours.forward(emb_o, pos, None, mask, index)
    logits_t, kv_t = ref.forward(emb_t, pos, None, mask, index)
    assert logits_o.dtype == np.float32 and ours.kv_length(kv_o) == s
    _close(logits_o, logits_t, "prefill logits", tol)
    _close_kv(kv_o, kv_t, "prefill", tol)

    step = rng.integers(0, 400, size=(b, 1))
    mask2 = np.concatenate([mask, np.ones((b, 1), bool)], axis=1)
    pos2 = np.full((3, b, 1), s)
    out_o, kv_o = ours.forward(ours.embed(step, []), pos2, kv_o, mask2, np.zeros((b, 1), np.int64), reserve=8)
    out_t, kv_t = ref.forward(ref.embed(step, []), pos2, kv_t, mask2, np.zeros((b, 1), np.int64))
    _close(out_o, out_t, "decode logits", tol)

    rows, cut = [1, 0, 1], 12
    sel_o, sel_t = ours.kv_select(kv_o, rows, length=cut, reserve=4), ref.kv_select(kv_t, rows, length=cut)
    assert ours.kv_length(sel_o) == cut and all(k.is_contiguous() for k in sel_o.keys)
    _close_kv(sel_o, sel_t, "kv_select", tol)
    more = rng.integers(0, 400, size=(3, 4))
    mask3 = np.concatenate([mask2[rows, :cut], np.ones((3, 4), bool)], axis=1)
    pos3 = np.broadcast_to(np.arange(cut, cut + 4), (3, 3, 4)).copy()
    out_o, _ = ours.forward(ours.embed(more, []), pos3, sel_o, mask3, np.array([[3], [1], [0]]))
    out_t, _ = ref.forward(ref.embed(more, []), pos3, sel_t, mask3, np.array([[3], [1], [0]]))
    _close(out_o, out_t, "prefill after a selected prefix", tol)

    singles_o = [ours.kv_select(kv_o, [i], length=n) for i, n in ((0, 9), (4, 18))]
    singles_t = [ref.kv_select(kv_t, [i], length=n) for i, n in ((0, 9), (4, 18))]
    stacked_o, stacked_t = ours.kv_stack(singles_o, 20, reserve=2), ref.kv_stack(singles_t, 20)
    assert ours.kv_length(stacked_o) == 20
    _close_kv(stacked_o, stacked_t, "kv_stack", tol)
    assert ours.kv_nbytes(stacked_o) == sum(t.nelement() * t.element_size() for t in stacked_o.keys) * 2


def test_stand_in_runner_matches_torch(ckpt_with_plans, stand_in):
    ours = TensorRTRunner(ckpt_with_plans, device="cuda")
    assert ours.name == "tensorrt" and ours.dtype == "float32"
    check_against_torch(ours, TorchRunner(ckpt_with_plans))
    calls = ours._plans["decoder"].engine.calls
    prefill_rows = [shape[0] for name, shape in calls if name == "prefill"]
    decode_rows = [shape[0] for name, shape in calls if name == "decode"]
    assert prefill_rows == [2, 2, 1, 2, 1] and decode_rows == [3, 2]  # 5-row prefill, 5-row decode, 3-row prefill
    assert [shape[0] for _, shape in ours._plans["vision"].engine.calls] == [24, 64, 8]


def test_stand_in_long_prefill_runs_in_pieces_like_torch(ckpt_with_plans, stand_in):
    ours, ref = TensorRTRunner(ckpt_with_plans, device="cuda"), TorchRunner(ckpt_with_plans)
    rng = np.random.default_rng(4)
    b, s = 3, 301  # more new tokens than the prefill profile's 256: pieces of 151 + 150, rows in chunks of 2 + 1
    ids = rng.integers(0, 400, size=(b, s))
    pos = np.broadcast_to(np.arange(s), (3, b, s)).copy()
    mask = np.ones((b, s), bool)
    mask[2, :160] = False  # padding that spans both pieces
    index = np.array([[300, 10], [151, 150], [0, 200]])
    logits_o, kv_o = ours.forward(ours.embed(ids, []), pos, None, mask, index)
    logits_t, kv_t = ref.forward(ref.embed(ids, []), pos, None, mask, index)
    _close(logits_o, logits_t, "long prefill logits")
    _close_kv(kv_o, kv_t, "long prefill")
    assert [(name, shape[:2]) for name, shape in ours._plans["decoder"].engine.calls] == \
        [("prefill", (2, 151)), ("prefill", (1, 151)), ("prefill", (2, 150)), ("prefill", (1, 150))]


def test_stand_in_runner_refuses_a_too_long_context(ckpt_with_plans, stand_in):
    ours = TensorRTRunner(ckpt_with_plans, device="cuda")
    embeds = ours.embed(np.ones((1, 300), np.int64), [])
    past = ours.forward(embeds[:, :256], np.zeros((3, 1, 256), np.int64), None, np.ones((1, 256), bool),
                        np.array([[0]]))[1]
    past = ours.kv_stack([past], 500)
    with pytest.raises(LimitExceededError, match=r"context \(past \+ new tokens\).* is 520, the profile allows"):
        ours.forward(embeds[:, :20], np.zeros((3, 1, 20), np.int64), past, np.ones((1, 520), bool), np.array([[0]]))
    with pytest.raises(InvalidInputError, match="attention_mask must be"):
        ours.forward(embeds[:, :20], np.zeros((3, 1, 20), np.int64), past, np.ones((1, 20), bool), np.array([[0]]))


@pytest.fixture(scope="module")
def images():
    return [make_test_image(56, 56, seed=s) for s in range(4)] + [make_test_image(90, 45, 11),
                                                                   make_test_image(40, 70, 12)]


@pytest.mark.parametrize("strategy,mode", [("round_robin", "fast"), ("knockout", "reason")])
def test_stand_in_engine_select_matches_torch(ckpt_with_plans, images, stand_in, strategy, mode):
    kwargs = dict(strategy=strategy, mode=mode, max_new_tokens=6) if mode == "reason" else dict(strategy=strategy)
    picked = images if mode == "fast" else images[:3]
    ours = Engine(ckpt_with_plans, backend="tensorrt", device="cuda").select(picked, PROFILE, **kwargs)
    theirs = Engine(ckpt_with_plans, backend="torch").select(picked, PROFILE, **kwargs)
    assert ours.stats["backend"] == "tensorrt"
    assert ours.winner == theirs.winner and ours.ranking == theirs.ranking
    for a, b in zip(ours.comparisons, theirs.comparisons):
        assert (a.first, a.second, a.answer, a.raw_text) == (b.first, b.second, b.answer, b.raw_text)
        assert abs(a.prob_a - b.prob_a) <= TOL


def test_auto_picks_tensorrt_on_cuda_when_plans_exist(ckpt_with_plans, stand_in):
    assert create_runner(ckpt_with_plans, backend="auto", device="cuda").name == "tensorrt"
    with pytest.raises(BackendUnavailableError, match="exported in float32"):
        TensorRTRunner(ckpt_with_plans, dtype="bfloat16")


@pytest.mark.parametrize("damage,message", [
    ("plan_byte", "engine file's sha256 differs from the sidecar's"),
    ("other_gpu", r"built for NVIDIA A100-SXM4-80GB \(compute capability \[8, 0\]\), this GPU is Stand-in GPU"),
    ("other_tensorrt", f"built with TensorRT 10.3.0.26, this is TensorRT {FAKE_VERSION}"),
    ("other_onnx", "built from ONNX sha256 0000"),
    ("other_profiles", "its optimization profiles differ from the manifest's"),
    ("no_plan", "decoder.plan: missing TensorRT plan; build it on this GPU: python -m export.build_tensorrt"),
    ("no_sidecar", "no sidecar decoder.plan.json"),
])
def test_refuses_plans_that_do_not_match(engine_copy, stand_in, damage, message):
    side = engine_copy / "decoder.plan.json"
    meta = json.loads(side.read_text())
    if damage == "plan_byte":
        (engine_copy / "decoder.plan").write_bytes((engine_copy / "decoder.plan").read_bytes() + b" ")
    elif damage == "other_gpu":
        side.write_text(json.dumps({**meta, "gpu": {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": [8, 0]}}))
    elif damage == "other_tensorrt":
        side.write_text(json.dumps({**meta, "tensorrt_version": "10.3.0.26"}))
    elif damage == "other_onnx":
        side.write_text(json.dumps({**meta, "onnx": {"file": "decoder.onnx", "sha256": "0" * 64}}))
    elif damage == "other_profiles":
        meta["profiles"][1]["shapes"]["inputs_embeds"]["max"][0] = 64
        side.write_text(json.dumps(meta))
    elif damage == "no_plan":
        (engine_copy / "decoder.plan").unlink()
    elif damage == "no_sidecar":
        side.unlink()
    with pytest.raises(EngineArtifactError, match=message):
        TensorRTRunner(engine_copy)


def test_load_plan_names_every_problem_at_once(engine_copy, stand_in):
    side = engine_copy / "decoder.plan.json"
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "tensorrt_version": "9.0", "graph": "vision"}))
    manifest = json.loads((engine_copy / "manifest.json").read_text())
    with pytest.raises(EngineArtifactError) as err:
        load_plan(engine_copy / "decoder.plan", manifest, graph="decoder", gpu=("Other GPU", (8, 9)))
    text = str(err.value)
    assert "graph 'vision', expected 'decoder'" in text and "TensorRT 9.0" in text and "Other GPU" in text


def test_auto_falls_back_when_the_plans_were_built_elsewhere(engine_copy, stand_in):
    write_stand_in_plans(engine_copy, gpu=("NVIDIA L4", (8, 9)))
    if torch.cuda.is_available():  # the next runtime in line runs
        assert create_runner(engine_copy, backend="auto", device="cuda").name in ("onnxruntime", "torch")
        return
    with pytest.raises(BackendUnavailableError, match=r"tensorrt: .*built for NVIDIA L4") as err:
        create_runner(engine_copy, backend="auto", device="cuda")  # without CUDA nothing else runs either
    assert "torch:" in str(err.value)


# ---------------------------------------------------------------------------------------------- 3. real TensorRT
@pytest.fixture(scope="module")
def built_ckpt(tiny_ckpt, tmp_path_factory):
    """A checkpoint copy with an fp32 export (LIMITS) and plans built by export.build_tensorrt on this GPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from export.build_tensorrt import build_engine_dir

    ckpt = tmp_path_factory.mktemp("trt_built") / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    export_engine(ckpt, limits=LIMITS, log=_quiet)
    build_engine_dir(ckpt / "onnx", precision="fp32", builder_optimization_level=0, progress=False)
    return ckpt


TRT_TOL = 2e-2  # fp32 plans may run TF32 matmuls (TensorRT's default on Ampere and later)


@pytest.mark.tensorrt
def test_tensorrt_runner_matches_torch(built_ckpt):
    ours = TensorRTRunner(built_ckpt, device="cuda")
    assert ours.device.startswith("cuda") and ours.name == "tensorrt"
    check_against_torch(ours, TorchRunner(built_ckpt, device="cuda", dtype="float32"), tol=TRT_TOL)


@pytest.mark.tensorrt
@pytest.mark.parametrize("strategy,mode", [("round_robin", "fast"), ("knockout", "reason")])
def test_tensorrt_engine_select_matches_torch(built_ckpt, images, strategy, mode):
    kwargs = dict(strategy=strategy, mode=mode, max_new_tokens=6) if mode == "reason" else dict(strategy=strategy)
    picked = images if mode == "fast" else images[:3]
    ours = Engine(built_ckpt, backend="tensorrt", device="cuda").select(picked, PROFILE, **kwargs)
    theirs = Engine(built_ckpt, backend="torch", device="cuda", dtype="float32").select(picked, PROFILE, **kwargs)
    assert ours.stats["backend"] == "tensorrt" and ours.winner == theirs.winner
    for a, b in zip(ours.comparisons, theirs.comparisons):
        assert (a.first, a.second) == (b.first, b.second)
        assert abs(a.prob_a - b.prob_a) <= TRT_TOL


@pytest.mark.tensorrt
def test_tensorrt_fp16_plans_stay_close_to_torch(tiny_ckpt, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from export.build_tensorrt import build_engine_dir

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    export_engine(ckpt, dtype="float16", limits=LIMITS, log=_quiet)
    build_engine_dir(ckpt / "onnx", precision="fp16", builder_optimization_level=0, progress=False)
    ours, ref = TensorRTRunner(ckpt, device="cuda"), TorchRunner(ckpt, device="cuda", dtype="float32")
    assert ours.dtype == "float16"
    ids = np.random.default_rng(5).integers(0, 400, size=(3, 11))
    pos, mask, index = np.broadcast_to(np.arange(11), (3, 3, 11)).copy(), np.ones((3, 11), bool), np.full((3, 1), 10)
    logits_o, kv_o = ours.forward(ours.embed(ids, []), pos, None, mask, index)
    logits_t, kv_t = ref.forward(ref.embed(ids, []), pos, None, mask, index)
    _close(logits_o, logits_t, "fp16 prefill logits", tol=5e-2)
    step, mask2 = ids[:, :1], np.ones((3, 12), bool)
    out_o, _ = ours.forward(ours.embed(step, []), np.full((3, 3, 1), 11), kv_o, mask2, np.zeros((3, 1), np.int64))
    out_t, _ = ref.forward(ref.embed(step, []), np.full((3, 3, 1), 11), kv_t, mask2, np.zeros((3, 1), np.int64))
    _close(out_o, out_t, "fp16 decode logits", tol=5e-2)
