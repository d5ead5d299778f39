"""Evaluate a screening model directory as users run it (the onnxruntime Screener), on fresh samples of both
generators, and the demo's creatives:

    python -m c4u_engine.train.screening_eval MODEL_DIR [--creatives-seed 2026] [--renders-seed 2027] [--json OUT]

- the judge's creatives (data/creative_usability.py): 300 by default, half usable, the other half split evenly over
  the five defect classes, plus 100 ads with no product; AP of P(available), the share of usable ones kept
  (P(available) >= reject_below: usable or flagged, never screened out) and of unusable ones screened out;
- the usability generator's renders (data/usability.py): AP, as the model card reports it;
- the creatives `c4u demo` ranks (its default seed and size) and the README's example, each with its cut-out: how many
  are kept.
`--choose-bound` instead picks reject_below on the held-out split of training (the test seed, never the fresh seeds
above): the largest bound in BOUNDS that keeps >= 98% of usable samples of each generator, else the smallest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from c4u_engine.screening import Screener
from c4u_engine.screening.classes import CLASSES
from c4u_engine.train.screening_metrics import average_precision

BOUNDS = (0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05)


def _probs(screener: Screener, samples) -> np.ndarray:
    # one call per sample: each has its own product and text
    return np.array([screener.probabilities([s.generated], s.text, s.product, use_cache=False)[0, 0]
                     for s in samples], np.float64)


def creative_samples(seed: int, n: int, n_no_product: int):
    from c4u_engine.data.creative_usability import NO_PRODUCT, creative_sample

    usable = n // 2
    defects = CLASSES[1:]
    kinds = ["available"] * usable + [defects[k % len(defects)] for k in range(n - usable)]
    kinds += [NO_PRODUCT] * n_no_product
    return [creative_sample(seed, i, kind=k) for i, k in enumerate(kinds)]


def report(p: np.ndarray, labels: list[str], defects: list[str], bound: float, threshold: float) -> dict:
    usable = np.array([lab == "available" for lab in labels])
    out = {"n": int(len(p)), "usable": int(usable.sum()), "ap": average_precision(usable, p),
           "usable_kept": float((p[usable] >= bound).mean()),
           "usable_at_threshold": float((p[usable] >= threshold).mean()),
           "unusable_screened_out": float((p[~usable] < bound).mean()) if (~usable).any() else None,
           "unusable_below_threshold": float((p[~usable] < threshold).mean()) if (~usable).any() else None,
           "screened_out_by_class": {}}
    for c in sorted(set(defects) - {""}):
        m = np.array([d == c for d in defects]) & ~usable
        if m.any():
            out["screened_out_by_class"][c] = {"n": int(m.sum()), "screened_out": float((p[m] < bound).mean())}
    return out


def demo_creatives(tmp: Path) -> tuple[list[str], str, str]:
    """The creatives `c4u demo` ranks by default (seed 7, 6 creatives, 112 px) and its cut-out."""
    from c4u_engine.data.creatives import render
    from c4u_engine.data.pairs import sample_group
    from c4u_engine.data.usability import _cutout

    group = sample_group(np.random.default_rng(7), 6)
    paths = []
    for i, spec in enumerate(group.specs):
        paths.append(str(tmp / f"creative_{i}.png"))
        render(spec, 112).save(paths[-1])
    cutout = tmp / "product_cutout.png"
    _cutout(group.product.category, group.specs[0].product_hue, 256).save(cutout)
    return paths, str(cutout), group.product.title


def evaluate(model_dir: str | None, *, creatives_seed: int, renders_seed: int, n_creatives: int = 300,
             n_no_product: int = 100, n_renders: int = 3000, reject_below: float | None = None) -> dict:
    import tempfile

    from c4u_engine.data.usability import sample
    from c4u_engine.imaging import load_image

    screener = Screener(model_dir, reject_below=reject_below, cache_bytes=0)
    bound, threshold = screener.reject_below, screener.threshold
    t0 = time.perf_counter()
    cs = creative_samples(creatives_seed, n_creatives, n_no_product)
    p = _probs(screener, cs)
    main = report(p[:n_creatives], [s.label for s in cs[:n_creatives]], [s.label for s in cs[:n_creatives]],
                  bound, threshold)
    no_product = p[n_creatives:]
    rs = [sample(renders_seed, i) for i in range(n_renders)]
    pr = _probs(screener, rs)
    renders = report(pr, [s.label for s in rs], [s.label for s in rs], bound, threshold)
    with tempfile.TemporaryDirectory() as tmp:
        paths, cutout, title = demo_creatives(Path(tmp))
        demo = screener.screen([load_image(q) for q in paths], title, cutout)
    return {
        "model_dir": str(screener.model_dir), "threshold": threshold, "reject_below": bound,
        f"creatives_seed_{creatives_seed}": main,
        "no_product": {"n": int(len(no_product)), "screened_out": float((no_product < bound).mean()),
                       "below_threshold": float((no_product < threshold).mean())},
        f"renders_seed_{renders_seed}": renders,
        "demo_creatives": {"n": len(demo), "kept": sum(not v.rejected for v in demo),
                           "usable": sum(v.usable for v in demo),
                           "p_available": [round(v.p_available, 3) for v in demo]},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def choose_bound(model_dir: str | None, seed: int, n_creatives: int = 1000, n_renders: int = 3000,
                 target: float = 0.98) -> dict:
    """The largest BOUNDS entry that keeps >= target of the usable samples of both generators (seed: the
    training's held-out split)."""
    from c4u_engine.data.creative_usability import creative_sample
    from c4u_engine.data.usability import sample

    screener = Screener(model_dir, cache_bytes=0)
    cs = [creative_sample(seed, i) for i in range(n_creatives)]
    rs = [sample(seed, i) for i in range(n_renders)]
    pc, pr = _probs(screener, cs), _probs(screener, rs)
    uc, ur = np.array([s.label == "available" for s in cs]), np.array([s.label == "available" for s in rs])
    table = {b: {"creatives_kept": float((pc[uc] >= b).mean()), "renders_kept": float((pr[ur] >= b).mean()),
                 "creatives_unusable_out": float((pc[~uc] < b).mean()),
                 "renders_unusable_out": float((pr[~ur] < b).mean())}
             for b in BOUNDS}
    reaching = [b for b in BOUNDS if table[b]["creatives_kept"] >= target and table[b]["renders_kept"] >= target]
    # none reaching the target: the smallest bound (screens out the least)
    return {"seed": seed, "target": target, "chosen": reaching[0] if reaching else BOUNDS[-1],
            "target_reached": bool(reaching), "table": table}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m c4u_engine.train.screening_eval", description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", nargs="?", help="a screening model directory (default: the built-in one)")
    ap.add_argument("--creatives-seed", type=int, default=2026)
    ap.add_argument("--renders-seed", type=int, default=2027)
    ap.add_argument("--n-creatives", type=int, default=300)
    ap.add_argument("--n-renders", type=int, default=3000)
    ap.add_argument("--reject-below", type=float, help="override the model's rejection bound")
    ap.add_argument("--choose-bound", type=int, metavar="SEED", help="pick reject_below on this seed's samples")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    if args.choose_bound is not None:
        result = choose_bound(args.model_dir, args.choose_bound)
    else:
        result = evaluate(args.model_dir, creatives_seed=args.creatives_seed, renders_seed=args.renders_seed,
                          n_creatives=args.n_creatives, n_renders=args.n_renders, reject_below=args.reject_below)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
