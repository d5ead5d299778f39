"""c4u export CKPT_DIR|builtin [--out DIR] [--opset 17] [--precision fp32|fp16|bf16|int8|int4] [--check-tensorrt]
    int8: [--calibration DIR] [--alpha A] [--no-smoothing] [--float-columns] [--activation-scales per_row|per_tensor]
    [--batch-invariant | --no-batch-invariant]

Exports a Qwen2.5-VL checkpoint to an engine directory (export/onnx_export.py; int8 / int4 through
export/quantize.py into CKPT_DIR/onnx-int8 or onnx-int4), then runs the static TensorRT readiness check
(export/check_tensorrt.py) on both graphs of a float export unless --no-check-tensorrt (int8 / int4 engines are
onnxruntime's: TensorRT builds its own precisions from a float export, python -m export.build_tensorrt).
Exit status: 0 done, 1 TensorRT check found problems (the engine directory is still usable by onnxruntime),
2 export failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from c4u_engine.errors import C4UError, InvalidInputError
from c4u_engine.runners.precision import PRECISIONS, QUANTIZED, normalize_precision


def main(argv: Sequence[str] | None = None, prog: str = "c4u export") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("ckpt_dir", help="Qwen2.5-VL checkpoint directory (config.json, safetensors, tokenizer)")
    parser.add_argument("--out", help="engine directory to write (default: CKPT_DIR/onnx)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="fp32 (default; onnxruntime on CPU), bf16/fp16 (TensorRT), int8 / int4 (quantized "
                             "onnxruntime engines, measured in BENCHMARKS.md)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                        help="same as --precision fp32|fp16|bf16 (kept for existing scripts)")
    parser.add_argument("--block-size", type=int, help="int4: weights per quantization block (32 default, 64, 128)")
    parser.add_argument("--keep-float", help="int8/int4: comma-separated units kept in float (default: "
                                             "vision.patch_embed,vision.merger; units: vision, vision.patch_embed, "
                                             "vision.merger, lm_head, decoder.first_layer; '' for none)")
    parser.add_argument("--calibration", metavar="DIR",
                        help="int8: your own creatives (image files in DIR) to calibrate the smoothing on (default: "
                             "the package's synthetic creatives and profiles)")
    parser.add_argument("--alpha", type=float, help="int8: SmoothQuant's alpha in (0, 1) (default: chosen per graph "
                                                    "on the calibration set)")
    parser.add_argument("--smoothing", action=argparse.BooleanOptionalAction, default=None,
                        help="int8: SmoothQuant smoothing of outlier channels (default on)")
    parser.add_argument("--float-columns", action="store_true", default=None,
                        help="int8: keep the outlier input channels (calibration max >= 6x the median channel's) in "
                             "float, LLM.int8-style (default off; smoothing is the default way)")
    parser.add_argument("--activation-scales", choices=("per_row", "per_tensor"), default=None,
                        help="int8: one activation scale per row/token (default; batch-invariant) or per batch "
                             "tensor (onnxruntime quantize_dynamic; results depend on batch composition)")
    parser.add_argument("--batch-invariant", action=argparse.BooleanOptionalAction, default=None,
                        help="attention's softmax row sums in float64, so a request's results never depend on what "
                             "shares its batch (default: on for int8 / int4, off for float precisions; a few percent "
                             "slower on CPU; TensorRT has no float64)")
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
        precision = normalize_precision(args.precision or args.dtype or "fp32")
        if args.precision and args.dtype and normalize_precision(args.dtype) != precision:
            raise InvalidInputError(f"--dtype {args.dtype} and --precision {args.precision} disagree")
        if precision != "int8" and any(v is not None for v in (args.calibration, args.alpha, args.smoothing,
                                                               args.activation_scales, args.float_columns)):
            raise InvalidInputError("--calibration, --alpha, --smoothing, --float-columns and --activation-scales "
                                    "apply to --precision int8 only")
        kept = None if args.keep_float is None else [u for u in args.keep_float.split(",") if u]
        result = export_engine(args.ckpt_dir, args.out, opset=args.opset, precision=precision, limits=limits,
                               external_data=args.external_data, block_size=args.block_size, float_kept=kept,
                               batch_invariant=args.batch_invariant,
                               **({} if precision != "int8" else {
                                   "calibration": args.calibration, "alpha": args.alpha, "smoothing": args.smoothing,
                                   "activation_scales": args.activation_scales, "float_columns": args.float_columns}))
    except C4UError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    times = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"engine directory: {result.out_dir} ({times})")
    if not args.check_tensorrt or precision in QUANTIZED:
        return 0
    from export.check_tensorrt import check_target

    reports = check_target(result.out_dir)
    for report in reports:
        print(report.format(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
