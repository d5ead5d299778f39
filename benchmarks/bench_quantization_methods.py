"""Which int8 method, and which graphs to quantize: the measurements behind export/quantize.py's choices.

    python benchmarks/bench_quantization_methods.py [--reps 15]

On the built-in model (its fp32 export, quantized here into a temporary directory):
- decoder: the largest call of an N = 8 round-robin fast selection (56 comparison rows) on the fp32 graph, the
  dynamic int8 graph (quantize_dynamic, per channel, one activation scale per tensor), the per-row int8 graph with
  SmoothQuant (export/quantize.py's default) and a static QDQ int8 graph (quantize_static, per channel,
  calibrated on every decoder call of 6 selections); median time and max |logit - fp32 logit|;
- vision: one encode_images of the 8 creatives with the vision tower in fp32 and in dynamic int8.
Engines are timed interleaved (one call each, in turn, --reps times) so load on the machine falls on all alike.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(ROOT))
import report  # noqa: E402
from bench_precision import synthetic_groups  # noqa: E402


def interleaved(calls: dict, reps: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for fn in calls.values():
        fn()
    for _ in range(reps):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from c4u_engine.api import Engine
    from c4u_engine.builtin import builtin_model_dir
    from c4u_engine.runners.onnxruntime_runner import OnnxRuntimeRunner
    from export.quantize import quantize_engine

    fp32_dir = builtin_model_dir() / "onnx"
    work = Path(tempfile.mkdtemp(prefix="c4u-qmethods-"))
    quiet = lambda message: None  # noqa: E731
    per_tensor = dict(activation_scales="per_tensor", smoothing=False)  # onnxruntime's quantize_dynamic
    quantize_engine(fp32_dir, work / "int8", "int8", float_kept=("vision",), log=quiet, **per_tensor)
    quantize_engine(fp32_dir, work / "int8-vision", "int8", float_kept=(), log=quiet, **per_tensor)
    quantize_engine(fp32_dir, work / "int8-per-row", "int8", float_kept=("vision",), log=quiet)

    engine = Engine(fp32_dir)
    decoder_calls, vision_calls = [], []
    run, encode = engine.runner._decoder.run, engine.runner.encode_images

    def record_run(names, feeds):
        decoder_calls.append({k: np.array(v) for k, v in feeds.items()})
        return run(names, feeds)

    def record_encode(pixels, grid):
        vision_calls.append((np.array(pixels), np.array(grid)))
        return encode(pixels, grid)

    engine.runner._decoder.run, engine.runner.encode_images = record_run, record_encode
    for images, profile in synthetic_groups(6, 112, seed=99):
        engine.select(images, profile, mode="fast", strategy="round_robin", use_cache=False)
    largest = max(decoder_calls, key=lambda f: f["inputs_embeds"].shape[0] * f["inputs_embeds"].shape[1])

    class Calls(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(decoder_calls)

        def get_next(self):
            return next(self._it, None)

    logging.disable(logging.WARNING)
    quantize_static(str(fp32_dir / "decoder.onnx"), str(work / "decoder_qdq.onnx"), Calls(),
                    quant_format=QuantFormat.QDQ, per_channel=True, op_types_to_quantize=["MatMul"],
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"MatMulConstBOnly": True})
    logging.disable(logging.NOTSET)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = {"fp32": ort.InferenceSession(str(fp32_dir / "decoder.onnx"), options),
                "int8 dynamic": ort.InferenceSession(str(work / "int8" / "decoder.onnx"), options),
                "int8 per row, smoothed (the export default)": ort.InferenceSession(
                    str(work / "int8-per-row" / "decoder.onnx"), options),
                "int8 static QDQ": ort.InferenceSession(str(work / "decoder_qdq.onnx"), options)}
    reference = sessions["fp32"].run(None, largest)[0]
    times = interleaved({k: (lambda s=s: s.run(None, largest)) for k, s in sessions.items()}, args.reps)
    rows = []
    base = times["fp32"]
    for name, session in sessions.items():
        err = float(np.abs(session.run(None, largest)[0] - reference).max())
        rows.append([f"decoder, {name}", f"{times[name] * 1e3:.1f} ms", f"{base / times[name]:.2f}x", f"{err:.3f}"])

    pixels, grid = vision_calls[0]
    runners = {"fp32": OnnxRuntimeRunner(fp32_dir), "int8 dynamic": OnnxRuntimeRunner(work / "int8-vision")}
    ref_embeds = runners["fp32"].encode_images(pixels, grid)
    times = interleaved({k: (lambda r=r: r.encode_images(pixels, grid)) for k, r in runners.items()}, args.reps)
    for name, runner in runners.items():
        err = max(float(np.abs(a - b).max()) for a, b in zip(runner.encode_images(pixels, grid), ref_embeds))
        rows.append([f"vision, {name}", f"{times[name] * 1e3:.1f} ms", f"{times['fp32'] / times[name]:.2f}x",
                     f"{err:.3f}"])
    shape = list(largest["inputs_embeds"].shape)
    print(report.markdown_table(["graph, method", "median", "speed-up", "max |diff| vs fp32"], rows))
    print(f"\nmachine: {report.machine()}; decoder call: inputs_embeds {shape}, past "
          f"{largest['past_key_0'].shape[2]} slots; vision call: {len(grid)} images, {pixels.shape[0]} patches; "
          f"{args.reps} interleaved reps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
