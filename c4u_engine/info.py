"""What this installation can do: `c4u info`."""

from __future__ import annotations

import importlib.util
import platform

from c4u_engine._version import __version__


def _runtime_version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        mod = __import__(module)
    except Exception as exc:  # an installed but broken runtime is reported, not raised
        return f"broken ({type(exc).__name__}: {exc})"
    return str(getattr(mod, "__version__", "unknown version"))


def collect() -> dict:
    """Version, native build facts, importable runtimes and devices seen, as plain data."""
    info: dict = {"version": __version__, "python": platform.python_version(), "machine": platform.machine()}
    try:
        from c4u_engine import _C
    except ImportError as exc:
        info["native"] = {"built": False, "error": str(exc)}
    else:
        n = _C.cuda_device_count() if _C.with_cuda else 0
        info["native"] = {
            "built": True,
            "cuda_kernels": bool(_C.with_cuda),
            "cuda_archs": [a for a in _C.cuda_archs.split(",") if a],
        }
        info["cuda_devices"] = [_C.cuda_device_name(i) for i in range(n)]
    info["runtimes"] = {name: _runtime_version(name) for name in ("torch", "onnxruntime", "tensorrt")}
    devices = ["cpu"]
    if info["runtimes"]["onnxruntime"] and not info["runtimes"]["onnxruntime"].startswith("broken"):
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    if info["runtimes"]["torch"] and not info["runtimes"]["torch"].startswith("broken"):
        import torch

        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    info["devices"] = devices
    return info


def format_info(info: dict) -> str:
    native = info["native"]
    lines = [f"c4u_engine {info['version']} (Python {info['python']}, {info['machine']})"]
    if not native["built"]:
        lines.append(f"native core: NOT importable ({native['error']})")
    elif native["cuda_kernels"]:
        lines.append(f"native core: CPU + CUDA kernels (architectures {', '.join(native['cuda_archs'])})")
        lines.append(f"CUDA devices seen by _C: {', '.join(info['cuda_devices']) or 'none'}")
    else:
        lines.append("native core: CPU kernels only (built without a CUDA compiler)")
    for name, version in info["runtimes"].items():
        lines.append(f"runtime {name}: {version or 'not installed'}")
    if "onnxruntime_providers" in info:
        lines.append(f"onnxruntime providers: {', '.join(info['onnxruntime_providers'])}")
    lines.append(f"devices: {', '.join(info['devices'])}")
    return "\n".join(lines)
