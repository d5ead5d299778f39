"""Load a Qwen2.5-VL checkpoint directory (config.json + safetensors) into the reference model.

Which file holds which tensor, the accepted namings and the refusal of pickle files: checkpoint_files.py.
torch.load is never called.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from c4u_engine.errors import BackendUnavailableError, ModelFormatError
from c4u_engine.models.checkpoint_files import CONFIG_FILE, checkpoint_fingerprint, internal_name, tensor_files
from c4u_engine.models.config import ModelConfig
from c4u_engine.models.qwen2_5_vl import Qwen25VL

__all__ = ["checkpoint_fingerprint", "expected_shapes", "load_model", "load_state_dict"]
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_pos_emb.inv_freq")  # buffers some old exports saved


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Internal tensor name -> shape, for every tensor a checkpoint of this config must provide."""
    with torch.device("meta"):
        model = Qwen25VL(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def load_state_dict(
    model_dir: str | Path,
    config: ModelConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Read and check every tensor of a checkpoint -> {internal name: tensor} on device (cast to dtype if given).

    config defaults to model_dir/config.json. Raises ModelFormatError for an unknown, duplicate, missing or
    misshapen tensor (naming the tensor, the expected and found shapes and the file). A tied checkpoint
    (tie_word_embeddings) needs no lm_head.weight; one that carries it anyway has it dropped.
    """
    model_dir = Path(model_dir)
    config = config or ModelConfig.from_json(model_dir / CONFIG_FILE)
    files = tensor_files(model_dir)
    expected = expected_shapes(config)
    sources: dict[str, tuple[str, Path]] = {}
    for name, path in files.items():
        if name.endswith(_IGNORED_SUFFIXES):
            continue
        key = internal_name(name)
        if key == "language.lm_head.weight" and config.text.tie_word_embeddings:
            continue
        if key is None or key not in expected:
            raise ModelFormatError(f"{path}: unexpected tensor {name!r} (not part of a Qwen2.5-VL model)")
        if key in sources:
            raise ModelFormatError(f"{path}: tensors {sources[key][0]!r} and {name!r} are the same weight")
        sources[key] = (name, path)
    missing = sorted(set(expected) - set(sources))
    if missing:
        raise ModelFormatError(f"{model_dir}: missing tensor {missing[0]!r} ({len(missing)} missing in all)")

    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[tuple[str, str]]] = {}
    for key, (name, path) in sources.items():
        by_file.setdefault(path, []).append((key, name))
    for path, names in by_file.items():
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for key, name in names:
                shape = tuple(f.get_slice(name).get_shape())
                if shape != expected[key]:
                    raise ModelFormatError(
                        f"{path}: tensor {name!r} has shape {list(shape)}, expected {list(expected[key])}"
                    )
                tensor = f.get_tensor(name)
                if not tensor.is_floating_point():
                    raise ModelFormatError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, expected floating point")
                state[key] = tensor if dtype is None else tensor.to(dtype)
    return state


def load_model(
    model_dir: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> Qwen25VL:
    """Build a Qwen25VL from a checkpoint directory, in eval mode with requires_grad off, on device.

    dtype None means: the checkpoint's torch_dtype on CUDA, float32 on CPU (CPU half-precision matmuls are slow
    and inexact). Parameters are materialised once, straight from the files (no random init).
    Rotary buffers stay float32 whatever dtype; to change precision later, reload rather than .to(dtype), or
    call rebuild_buffers() afterwards.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device} requested but torch sees no CUDA device")
    model_dir = Path(model_dir)
    config = ModelConfig.from_json(model_dir / CONFIG_FILE)
    if dtype is None:
        dtype = getattr(torch, config.torch_dtype) if device.type == "cuda" else torch.float32
    state = load_state_dict(model_dir, config, device=device, dtype=dtype)
    with torch.device("meta"):
        model = Qwen25VL(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.rebuild_buffers()
    # Inference by default: no autograd graphs hanging off KV caches. Training code can re-enable grads.
    return model.eval().requires_grad_(False)
