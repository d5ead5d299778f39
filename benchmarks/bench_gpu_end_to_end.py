"""Qwen2.5-VL-7B-shaped end to end on one GPU: Engine.select against the transformers loop a user would write, on
the same random bf16 weights (issue 15 item 4; benchmarks/gpu_suite.sh runs it).

    python benchmarks/bench_gpu_end_to_end.py --device cuda [--layers 28] [--n 8] [--image-side 448]
        [--max-new-tokens 64] [--naive-limit 4] [--peak-tflops TFLOPS] [--require-kernels] [--json out.json]
    python benchmarks/bench_gpu_end_to_end.py --tiny        # a tiny CPU run of the same code (the suite's dry run)

The checkpoint has the real Qwen2.5-VL-7B shapes (decoder 3584 hidden, 28 layers, 28 query / 4 KV heads of 128,
18944 MLP, 152064 vocab; vision 32 blocks of 1280, out 3584) with random weights made directly on the device, never
downloaded or written to disk: transformers' Qwen2_5_VLForConditionalGeneration is built from the config on the
device, and the engine's model takes the very same tensors (no second copy). The directory on disk holds only the
tokenizer, chat template, preprocessor and config (and a tiny weights file the engine fingerprints).
Rows: fast and reason (max-new-tokens per comparison; random weights never write "</answer>", so every row decodes
them all), knockout and round robin, N images of image-side^2; engines: "default" (today's torch path) and
"kernels" (paged KV store + TorchRunner.use_kernels: cascade decode in the store's pools, kernel embed, M-RoPE and
sampling). The transformers loop is benchmarks/bench_select.py's (one forward or one generate per comparison,
full prompt each time), timed over at most --naive-limit comparisons and extrapolated linearly.
TFLOP/s: weight-matmul FLOPs of the tokens each side actually ran (2 x non-embedding parameters x tokens + the
logits rows + 2 x vision parameters x patches; attention scores excluded), over its seconds, against the card's dense
bf16 peak (gpu_peaks.py by the device's name: H100 SXM and H200 989; none for an unknown card or on CPU unless
--peak-tflops gives one). --require-kernels: exit 3 (after measuring, rows marked kernels_active: false) if the
"kernels" engine could not run its kernels here and timed today's path under that name; the GPU suite sets it.
Argument errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_select
import report
from gpu_peaks import describe, peak_for

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from tiny_checkpoint import make_test_image, make_tiny_checkpoint

# Qwen/Qwen2.5-VL-7B-Instruct's config.json shapes
TEXT_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, max_position_embeddings=128000, rms_norm_eps=1e-6,
               rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
VISION_7B = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                 patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                 fullatt_block_indexes=[7, 15, 23, 31])
# --tiny: the same code on a CPU in seconds (the 7B vocabulary kept: sampled ids lie beyond the tiny tokenizer)
TEXT_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=152064, max_position_embeddings=4096,
                 rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]})
VISION_TINY = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, window_size=56,
                   fullatt_block_indexes=[1])
PROFILE = {"title": "Waterproof trail running shoes", "queries": ["running shoes sale", "waterproof sneakers"]}
ENGINES = ("default", "kernels")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (implies --device cpu and small sizes)")
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default: the 7B's 28)")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--image-side", type=int, default=448)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--modes", nargs="+", choices=("fast", "reason"), default=["fast", "reason"])
    p.add_argument("--strategies", nargs="+", choices=("knockout", "round_robin"), default=["knockout", "round_robin"])
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--naive-limit", type=int, default=4, help="transformers comparisons timed per row (0 = all)")
    p.add_argument("--peak-tflops", type=float, default=None, help="default: the card's dense bf16 datasheet peak")
    p.add_argument("--require-kernels", action="store_true",
                   help="fail (exit 3) when the kernels engine falls back to today's path")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                   help="default: bfloat16 on cuda, float32 with --tiny")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if a.tiny:
        a.device = "cpu"
        a.n, a.image_side, a.max_new_tokens = min(a.n, 3), min(a.image_side, 56), min(a.max_new_tokens, 4)
    if a.n < 2 or a.image_side < 28 or a.image_side % 28 or a.max_new_tokens < 1 or a.naive_limit < 0 \
            or (a.peak_tflops is not None and a.peak_tflops <= 0) or (a.layers is not None and a.layers < 1):
        p.error("--n >= 2, --image-side a positive multiple of 28, --max-new-tokens >= 1, --naive-limit >= 0, "
                "--peak-tflops > 0, --layers >= 1")
    a.dtype = a.dtype or ("float32" if a.tiny else "bfloat16")
    return a


def build(a, root: Path):
    """(model_dir, c4u Qwen25VL, transformers model, parameter counts) sharing one set of random weights."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from c4u_engine.models.checkpoint_files import internal_name
    from c4u_engine.models.config import ModelConfig
    from c4u_engine.models.qwen2_5_vl import Qwen25VL

    model_dir = make_tiny_checkpoint(root / "c4u-7b-shaped", max_pixels=a.image_side * a.image_side)
    cfg_path = model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    text, vision = dict(TEXT_TINY if a.tiny else TEXT_7B), dict(VISION_TINY if a.tiny else VISION_7B)
    if a.layers is not None:
        text["num_hidden_layers"] = a.layers
    text["layer_types"] = ["full_attention"] * text["num_hidden_layers"]
    cfg["text_config"].update(text)
    cfg["vision_config"].update(vision)
    cfg["dtype"] = a.dtype
    cfg_path.write_text(json.dumps(cfg, indent=2))
    dtype, device = getattr(torch, a.dtype), torch.device(a.device)
    torch.manual_seed(0)
    with torch.device(device):
        hf = Qwen2_5_VLForConditionalGeneration._from_config(Qwen2_5_VLConfig.from_pretrained(model_dir),
                                                             dtype=dtype)
    hf = hf.eval().requires_grad_(False)
    state = {}
    for name, tensor in hf.state_dict().items():
        key = internal_name(name)
        if key is None:
            raise SystemExit(f"transformers tensor {name!r} has no c4u name (checkpoint_files.internal_name)")
        state[key] = tensor
    with torch.device("meta"):
        model = Qwen25VL(ModelConfig.from_json(cfg_path))
    model.load_state_dict(state, strict=True, assign=True)  # the same tensors, not copies
    model.rebuild_buffers()
    model = model.eval().requires_grad_(False)
    counts = {"vision": 0, "language": 0, "embeddings": 0, "lm_head": 0}
    for name, t in model.state_dict().items():
        part = ("embeddings" if "embed_tokens" in name else "lm_head" if "lm_head" in name
                else "vision" if name.startswith("visual.") else "language")
        counts[part] += t.numel()
    return model_dir, model, hf, counts


def tflops(counts, hidden: int, vocab: int, tokens: int, logits_rows: int, patches: int) -> float:
    """Weight-matmul FLOPs (TFLOP) of `tokens` decoder tokens, `logits_rows` lm_head rows and `patches` patches."""
    return (2 * counts["language"] * tokens + 2 * hidden * vocab * logits_rows + 2 * counts["vision"] * patches) / 1e12


def main(argv=None) -> int:
    a = parse(argv)
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    from c4u_engine.api import Engine
    from c4u_engine.reproduce import TransformersJudge
    from c4u_engine.train.engine_bridge import InMemoryRunner

    root = Path(a.workdir or tempfile.mkdtemp(prefix="c4u-e2e-"))
    t0 = time.perf_counter()
    model_dir, model, hf, counts = build(a, root)
    setup_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    judge = TransformersJudge.from_model(model_dir, hf, a.device)
    engines, fallback = {}, {}
    for name in a.engines:
        runner = InMemoryRunner(model)  # each engine its own runner (kernel mode is a runner setting), same weights
        engine = Engine(model_dir, runner=runner, kv_layout="paged" if name == "kernels" else "contiguous")
        if name == "kernels":
            fallback[name] = runner.use_kernels("cuda" if a.device == "cuda" else "cpu", strict=False)
            if fallback[name] is not None:
                print(f"kernels engine: today's path instead ({fallback[name]})", file=sys.stderr)
        engines[name] = engine
    gpu_name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    gpu = f"; GPU: {gpu_name}" if a.device == "cuda" else ""
    known = peak_for(gpu_name) if a.device == "cuda" else None
    peak = a.peak_tflops if a.peak_tflops is not None else (known.bf16_tflops if known else None)
    print(describe(gpu_name, known, a.peak_tflops, "TFLOP/s") if a.device == "cuda" or a.peak_tflops
          else "peak: none on cpu", flush=True)

    def pct(rate: float) -> float | None:  # TFLOP/s as % of the peak, None without one
        return 100 * rate / peak if peak else None

    def write_json(rows: list) -> None:  # after every row: a step killed at its time limit keeps what it measured
        if a.json is not None:
            a.json.write_text(json.dumps(dict(machine=report.machine() + gpu, setup_s=setup_s, params=counts,
                                              args={k: str(v) for k, v in vars(a).items()},
                                              kernels_fallback=fallback, rows=rows), indent=1))
    hidden, vocab = model.config.text.hidden_size, model.config.text.vocab_size
    patches = (a.image_side // 14) ** 2
    images = [make_test_image(a.image_side, a.image_side, seed=i) for i in range(a.n)]
    bench_select.workload.PROFILE = PROFILE  # the loop renders the same profile the engine selects with
    rows = []
    for mode in a.modes:
        for strategy in a.strategies:
            row = dict(mode=mode, strategy=strategy, n=a.n)
            first = None
            for name, engine in engines.items():
                engine.select(images[:2], PROFILE, mode=mode, strategy=strategy, max_new_tokens=2)  # warm-up
                sync()
                t = time.perf_counter()
                sel = engine.select(images, PROFILE, mode=mode, strategy=strategy, max_new_tokens=a.max_new_tokens,
                                    use_cache=False)
                sync()
                seconds = time.perf_counter() - t
                st = sel.stats
                work = tflops(counts, hidden, vocab, st.get("tokens_prefilled", 0) + st.get("tokens_decoded", 0),
                              st.get("comparisons", 0) + st.get("tokens_decoded", 0),
                              patches * st.get("images_encoded", 0))
                row[name] = dict(seconds=seconds, comparisons=len(sel.comparisons), tflop=work,
                                 kernels_active=getattr(engine.runner, "kernels", None) is not None,
                                 tflops=work / seconds, peak_pct=pct(work / seconds),
                                 tokens_prefilled=st.get("tokens_prefilled", 0),
                                 tokens_decoded=st.get("tokens_decoded", 0))
                if first is None:
                    first = sel
                else:
                    row[name]["same_answers_as_" + next(iter(engines))] = \
                        [c.answer for c in sel.comparisons] == [c.answer for c in first.comparisons]
            pairs = [(c.first, c.second) for c in first.comparisons]
            sample = pairs[: a.naive_limit] if a.naive_limit else pairs
            engine = next(iter(engines.values()))
            bench_select.naive_loop(judge, engine, images, sample[:1], mode, 2)  # warm-up
            sync()
            outs, t_naive, _ = bench_select.naive_loop(judge, engine, images, sample, mode, a.max_new_tokens)
            sync()
            prompt = len(judge.inputs(*engine.comparison_messages(images[0], images[1], PROFILE, mode=mode))
                         ["input_ids"][0])
            new = a.max_new_tokens if mode == "reason" else 0
            # a forward computes logits at every prompt position (transformers' default), generate at the last
            naive_work = len(sample) * tflops(counts, hidden, vocab, prompt + new,
                                              prompt if mode == "fast" else 1 + new, 2 * patches)
            scale = len(pairs) / len(sample)
            row["transformers"] = dict(seconds=t_naive * scale, measured_comparisons=len(sample),
                                       tflops=naive_work / t_naive, peak_pct=pct(naive_work / t_naive))
            if mode == "fast":
                id_a, id_b = engine.answer_token_ids
                probs = [1 / (1 + np.exp(float(o[id_b]) - float(o[id_a]))) for o in outs]
                row["transformers"]["max_prob_a_diff"] = float(max(abs(p - c.prob_a) for p, c in
                                                                   zip(probs, first.comparisons)))
            else:  # greedy text: the same tokens as the engine's first variant (bf16 may differ in near-ties)
                agree = sum(c.raw_text == engine.comparison_messages(images[c.first], images[c.second], PROFILE,
                                                                     mode=mode)[1]
                            + judge.tokenizer.decode(o, skip_special_tokens=True)
                            for c, o in zip(first.comparisons, outs))
                row["transformers"]["same_text"] = f"{agree}/{len(outs)}"
            for name in engines:
                row[name]["speedup_vs_transformers"] = row["transformers"]["seconds"] / row[name]["seconds"]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            write_json(rows)
    shape = (f"decoder {hidden} x {model.config.text.num_hidden_layers} layers, vision {model.config.vision.depth} "
             f"blocks; {sum(counts.values()) / 1e9:.2f}B parameters, {a.dtype}")
    print(f"machine: {report.machine()}{gpu}; torch {torch.__version__}")
    print(f"{'TINY CPU RUN; ' if a.tiny else ''}{shape}; N={a.n}, {a.image_side}x{a.image_side}, "
          f"{a.max_new_tokens} new tokens (reason); setup {setup_s:.1f}s; transformers loop timed over "
          f"<= {a.naive_limit or 'all'} comparisons per row, extrapolated")
    headers = ["mode", "strategy", "comparisons", "transformers s", "transformers TFLOP/s",
               "agreement (fast: max P(A) diff; reason: same text)"]
    for name in engines:
        headers += [f"{name} s", f"{name} speedup", f"{name} TFLOP/s (% of {peak:.0f})" if peak else f"{name} TFLOP/s"]
    table = []
    for r in rows:
        cells = [r["mode"], r["strategy"], r[next(iter(engines))]["comparisons"],
                 f"{r['transformers']['seconds']:.2f}", f"{r['transformers']['tflops']:.2f}",
                 f"{r['transformers']['max_prob_a_diff']:.1e}" if r["mode"] == "fast"
                 else r["transformers"]["same_text"]]
        for name in engines:
            e = r[name]
            cells += [f"{e['seconds']:.2f}", f"{e['speedup_vs_transformers']:.1f}x",
                      f"{e['tflops']:.2f}" + (f" ({e['peak_pct']:.1f}%)" if e["peak_pct"] is not None else "")]
        table.append(cells)
    print(report.markdown_table(headers, table))
    write_json(rows)
    missing = {name: why for name, why in fallback.items() if why is not None}
    if a.require_kernels and missing:  # measured anyway (the JSON says kernels_active: false), but not a pass
        print(f"FAILED: --require-kernels, but the kernels engine ran today's path: {missing}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
