"""`c4u export`: the installed package's way to export a checkpoint to ONNX engines (fp32, or int8 / int4 quantized).

It runs the `export` package (shipped in the same wheel; `export/__main__.py` holds the options) with two things an
installed package needs: the built-in model (`c4u export builtin ...`) is never written into the installation (its
engines go to a user directory unless --out says where), and a missing export dependency (torch, onnx, onnx-ir)
is an error that names the extra to install instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from c4u_engine.errors import BackendUnavailableError

EXPORT_DEPENDENCIES = ("torch", "onnx", "onnx_ir", "onnxruntime", "onnxscript")
EXTRA_HINT = "pip install 'c4u_engine[export]'"


def _precision(argv: Sequence[str]) -> str:
    from c4u_engine.runners.precision import normalize_precision

    for k, arg in enumerate(argv):
        for flag in ("--precision", "--dtype"):
            if arg == flag and k + 1 < len(argv):
                return normalize_precision(argv[k + 1])
            if arg.startswith(flag + "="):
                return normalize_precision(arg.split("=", 1)[1])
    return "fp32"


def export_argv(argv: Sequence[str]) -> list[str]:
    """argv for export/__main__.py: `builtin` (or the built-in model's path) as the checkpoint becomes the shipped
    model's directory, with --out defaulting to user_engine_dir(precision)."""
    from c4u_engine.builtin import BUILTIN_DIR, builtin_model_dir, user_engine_dir

    argv = list(argv)
    positional = next((k for k, a in enumerate(argv) if not a.startswith("-")
                       and (k == 0 or not argv[k - 1].startswith("--") or "=" in argv[k - 1]
                            or argv[k - 1] in _FLAGS_WITHOUT_VALUE)), None)
    if positional is None:
        return argv
    ckpt = argv[positional]
    if ckpt != "builtin" and Path(ckpt).resolve() != BUILTIN_DIR:
        return argv
    argv[positional] = str(builtin_model_dir())
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        out = user_engine_dir(_precision(argv))
        out.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--out", str(out)]
    return argv


# export/__main__.py's options that take no value (a positional may follow them).
_FLAGS_WITHOUT_VALUE = {"--check-tensorrt", "--no-check-tensorrt", "--external-data", "--no-external-data",
                        "--smoothing", "--no-smoothing", "-h", "--help"}


def run_export(argv: Sequence[str]) -> int:
    """`c4u export ARGS`: export/__main__.py's main under the name `c4u export`."""
    try:
        from export.__main__ import main
    except ModuleNotFoundError as exc:
        if exc.name != "export":
            raise
        raise BackendUnavailableError(f"c4u export: this installation has no export package ({exc}); reinstall "
                                      f"c4u_engine with the export extra: {EXTRA_HINT}") from None
    try:
        return main(export_argv(argv), prog="c4u export")
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in EXPORT_DEPENDENCIES:
            raise
        raise BackendUnavailableError(f"c4u export needs {missing}, which is not installed: {EXTRA_HINT} "
                                      f"(torch, onnx, onnx-ir)") from None
