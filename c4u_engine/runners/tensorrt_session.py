"""Running one TensorRT engine on torch CUDA tensors (tensorrt 10.x name-based I/O; the calls 11.x keeps).

TrtSession binds tensors by name: set_optimization_profile_async when the profile changes, then per input
set_input_shape + set_tensor_address, output buffers allocated with torch at the shapes the context infers, and
execute_async_v3 on a stream. CudaPlacement is the device side of that: the device, the stream the work is
enqueued on, and a scratch buffer for empty tensors (TensorRT wants a real address, at least one byte, even for a
tensor with a zero dimension: an empty past KV at prefill). Addresses must be 256-byte aligned: an input view
that is not (a batch slice of a KV) is copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from c4u_engine.errors import BackendUnavailableError, EngineArtifactError, InvalidInputError
from c4u_engine.runners.tensorrt_plan import import_tensorrt

ALIGNMENT = 256  # bytes: IExecutionContext::setTensorAddress's documented requirement
# TensorRT DataType member names -> the manifest's dtype names (and, through torch_dtype, torch dtypes).
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64",
              "INT8": "int8", "UINT8": "uint8", "BOOL": "bool", "FP8": "float8_e4m3fn"}


def torch_dtype(torch: Any, name: str) -> Any:
    """The torch dtype of a manifest dtype name ("float32", "bfloat16", "int64", "bool", ...)."""
    return getattr(torch, name)


class CudaPlacement:
    """Where a session's work runs: a CUDA device and a stream (its own unless `stream` is given)."""

    def __init__(self, device: str = "cuda", stream: Any | None = None) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(f"the tensorrt runtime needs a CUDA build of torch for device buffers: "
                                          f"{exc}") from exc
        if not str(device).startswith("cuda"):
            raise BackendUnavailableError(f"tensorrt runs on CUDA devices only, got device {device!r}")
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} asked for, but torch {torch.__version__} sees no "
                                          f"CUDA device")
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise InvalidInputError(f"unknown device {device!r}; valid: 'cuda', 'cuda:N'") from exc
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if not 0 <= index < torch.cuda.device_count():
            raise InvalidInputError(f"device {device!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
        self.torch = torch
        self.index = index
        self.device = torch.device("cuda", index)
        with torch.cuda.device(index):
            # A stream of our own: TensorRT warns that enqueueing on the legacy default stream adds syncs.
            self.stream = stream if stream is not None else torch.cuda.Stream()
        self._scratch = None

    @property
    def handle(self) -> int:
        """The stream as the integer handle TensorRT takes."""
        return int(self.stream.cuda_stream)

    def gpu(self) -> tuple[str, tuple[int, int]]:
        """(name, compute capability) of the device, as sidecars record them."""
        major, minor = self.torch.cuda.get_device_capability(self.index)
        return self.torch.cuda.get_device_name(self.index), (int(major), int(minor))

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make the device and stream current; the stream first waits for work already queued on the caller's."""
        torch = self.torch
        with torch.cuda.device(self.index):
            caller = torch.cuda.current_stream()
            if caller != self.stream:
                self.stream.wait_stream(caller)
            with torch.cuda.stream(self.stream):
                yield

    def scratch_address(self) -> int:
        """A small device buffer's address, bound to tensors with no elements."""
        if self._scratch is None:
            self._scratch = self.torch.empty(ALIGNMENT, dtype=self.torch.uint8, device=self.device)
        return int(self._scratch.data_ptr())

    def keep_until_done(self, tensor: Any) -> None:
        """Tell the caching allocator that `tensor` is in use by work on this stream."""
        tensor.record_stream(self.stream)


class TrtSession:
    """Runs one engine: picks a profile, sets shapes and addresses, enqueues on the placement's stream."""

    def __init__(self, engine: Any, meta: Mapping[str, Any] | None = None) -> None:
        self._trt = import_tensorrt()
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailableError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == self._trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.dtypes = {n: self._dtype_name(n) for n in names}  # manifest dtype names
        self.profile_names = [p["name"] for p in (meta or {}).get("profiles", [])]
        self._profile: int | None = None

    def _dtype_name(self, name: str) -> str:
        dt = self.engine.get_tensor_dtype(name)
        for key, value in TRT_DTYPES.items():
            if dt == getattr(self._trt.DataType, key, None):
                return value
        raise EngineArtifactError(f"tensor '{name}' has TensorRT dtype {dt}, which TrtSession cannot map to torch")

    def check_io(self, where: str, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
        """EngineArtifactError unless the engine's I/O names and dtypes are the declared ones (TensorSpecs)."""
        for kind, declared, found in (("inputs", inputs, self.inputs), ("outputs", outputs, self.outputs)):
            if sorted(s.name for s in declared) != sorted(found):
                raise EngineArtifactError(f"{where}: engine {kind} {sorted(found)} differ from the manifest's "
                                          f"{sorted(s.name for s in declared)}")
            for spec in declared:
                if self.dtypes[spec.name] != spec.dtype:
                    raise EngineArtifactError(f"{where}: engine tensor {spec.name} is {self.dtypes[spec.name]}, "
                                              f"the manifest declares {spec.describe()}")

    def profile_index(self, shapes: Mapping[str, Sequence[int]], profile: str | int | None = None) -> int:
        """The profile to use: `profile` (name or index) when given, else the first whose ranges hold `shapes`."""
        if isinstance(profile, str):
            if profile not in self.profile_names:
                raise InvalidInputError(f"unknown profile {profile!r}; profiles: {self.profile_names}")
            return self.profile_names.index(profile)
        if isinstance(profile, int):
            if not 0 <= profile < self.engine.num_optimization_profiles:
                raise InvalidInputError(f"profile index {profile} out of range "
                                        f"0..{self.engine.num_optimization_profiles - 1}")
            return profile
        for index in range(self.engine.num_optimization_profiles):
            if all(self._fits(name, shape, index) for name, shape in shapes.items()):
                return index
        raise InvalidInputError(f"no optimization profile holds input shapes {dict(shapes)}; profiles: "
                                f"{self.profile_names or self.engine.num_optimization_profiles}")

    def _fits(self, name: str, shape: Sequence[int], index: int) -> bool:
        lo, _, hi = self.engine.get_tensor_profile_shape(name, index)
        return len(lo) == len(shape) and all(a <= s <= b for a, s, b in zip(lo, shape, hi))

    def run(self, inputs: Mapping[str, Any], *, profile: str | int | None = None,
            placement: CudaPlacement | None = None) -> dict[str, Any]:
        """Run on `inputs` (name -> tensor on the placement's device, of the engine's dtype); returns name -> new
        output tensor. The work is enqueued on the placement's stream (default: the current device and stream)."""
        missing, extra = set(self.inputs) - set(inputs), set(inputs) - set(self.inputs)
        if missing or extra:
            raise InvalidInputError(f"engine inputs are {self.inputs}; missing {sorted(missing)}, "
                                    f"unexpected {sorted(extra)}")
        if placement is None:
            import torch

            placement = CudaPlacement("cuda", stream=torch.cuda.current_stream())
        torch = placement.torch
        index = self.profile_index({n: tuple(t.shape) for n, t in inputs.items()}, profile)
        outputs: dict[str, Any] = {}
        bound = []  # every tensor whose address is bound stays referenced until the engine is enqueued
        with placement.active():
            if index != self._profile:
                self.context.set_optimization_profile_async(index, placement.handle)
                self._profile = index
            for name in self.inputs:
                t, want = inputs[name], torch_dtype(torch, self.dtypes[name])
                if t.device != placement.device or t.dtype != want:
                    raise InvalidInputError(f"input '{name}' must be a {want} tensor on {placement.device}, got "
                                            f"{t.dtype} on {t.device}")
                if not t.is_contiguous() or t.data_ptr() % ALIGNMENT:
                    t = t.clone(memory_format=torch.contiguous_format)  # made on, and owned by, this stream
                else:
                    placement.keep_until_done(t)
                if not self.context.set_input_shape(name, tuple(t.shape)):
                    raise InvalidInputError(f"input '{name}' shape {tuple(t.shape)} is outside profile {index}")
                bound.append(t)
                self.context.set_tensor_address(name, t.data_ptr() if t.numel() else placement.scratch_address())
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise EngineArtifactError(f"output '{name}' has a data-dependent shape {shape}; TrtSession "
                                              "supports outputs whose shapes follow from the input shapes")
                out = torch.empty(shape, dtype=torch_dtype(torch, self.dtypes[name]), device=placement.device)
                self.context.set_tensor_address(name, out.data_ptr() if out.numel() else placement.scratch_address())
                outputs[name] = out
            if not self.context.execute_async_v3(placement.handle):
                raise BackendUnavailableError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        return outputs
