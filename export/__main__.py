"""python -m export CKPT_DIR [--out DIR] [--opset 17] [--dtype float32|float16|bfloat16] [--check-tensorrt]

Exports a Qwen2.5-VL checkpoint to an engine directory (export/onnx_export.py), then runs the static TensorRT
readiness check (export/check_tensorrt.py) on both graphs unless --no-check-tensorrt.
Exit status: 0 done, 1 TensorRT check found problems (the engine directory is still usable by onnxruntime),
2 export failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from c4u_engine.errors import C4UError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    parser.add_argument("ckpt_dir", help="Qwen2.5-VL checkpoint directory (config.json, safetensors, tokenizer)")
    parser.add_argument("--out", help="engine directory to write (default: CKPT_DIR/onnx)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="graph precision: float32 for onnxruntime on CPU, bfloat16/float16 for TensorRT")
    parser.add_argument("--check-tensorrt", action=argparse.BooleanOptionalAction, default=True,
                        help="run the static TensorRT readiness check on the graphs (default on)")
    parser.add_argument("--external-data", action=argparse.BooleanOptionalAction, default=None,
                        help="store weights beside the graphs (default: only when a graph needs it, > 1.8 GiB)")
    parser.add_argument("--max-prefill-batch", type=int, default=16, help="TensorRT profile: rows per prefill")
    parser.add_argument("--max-decode-batch", type=int, default=64, help="TensorRT profile: rows per decode step")
    parser.add_argument("--max-prefill-tokens", type=int, default=2048, help="TensorRT profile: new tokens per call")
    parser.add_argument("--max-context", type=int, help="TensorRT profile: past + new tokens (default: the "
                        "model's max_position_embeddings, at most 8192)")
    parser.add_argument("--max-vision-images", type=int, default=2,
                        help="TensorRT profile: largest-size images per vision call")
    args = parser.parse_args(argv)

    try:
        from export.manifest import ProfileLimits
        from export.onnx_export import export_engine

        limits = ProfileLimits(max_prefill_batch=args.max_prefill_batch, max_decode_batch=args.max_decode_batch,
                               max_prefill_tokens=args.max_prefill_tokens, max_context=args.max_context,
                               max_vision_images=args.max_vision_images)
        result = export_engine(args.ckpt_dir, args.out, opset=args.opset, dtype=args.dtype, limits=limits,
                               external_data=args.external_data)
    except C4UError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    times = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"engine directory: {result.out_dir} ({times})")
    if not args.check_tensorrt:
        return 0
    from export.check_tensorrt import check_target

    reports = check_target(result.out_dir)
    for report in reports:
        print(report.format(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
