"""MODEL_CARD.md of a screening model, written from the metrics.json that screening_train measured.

    python -m c4u_engine.train.screening_card MODEL_DIR [--command "how it was trained"] [--note "..."]
        [--eval EVAL.json]   # python -m c4u_engine.train.screening_eval MODEL_DIR --json EVAL.json: fresh seeds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from c4u_engine.screening.classes import CLASSES


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _binary_row(name: str, m: dict) -> str:
    b = m["binary"]
    return f"| {name} | {_pct(b['precision'])} | {_pct(b['recall'])} | {_pct(b['f1'])} | {_pct(b['ap'])} | " \
           f"{_pct(m['accuracy'])} |"


def card(metrics: dict, command: str, note: str = "", model: dict | None = None, evaluation: dict | None = None,
         reject_below: float | None = None) -> str:
    """The card's text. model: the "model" block of screen_config.json (RFNetConfig fields; defaults if absent);
    evaluation: screening_eval's results on fresh seeds; reject_below: the config's rejection bound."""
    t = metrics["train"]
    model = model or {}
    fusion = int(model.get("fusion_layers", 2))
    strides = ", ".join(str(s) for s in model.get("encoder_strides", (2, 1, 2, 2)))
    blocks = "one self-attention fusion block" if fusion == 1 else f"{fusion} self-attention fusion blocks"
    defects = {k.removeprefix("defect "): v for k, v in metrics["caught_by_difficulty"].items()
               if k.startswith("defect ") and k != "defect "}
    weakest = sorted(defects, key=lambda k: defects[k]["caught"])[:3]
    lines = [
        "# c4u_engine built-in screening model (RFNet-style usability check)",
        "",
        "Judges whether a generated ad is usable before selection, after JD's RFNet (ECCV 2024, arXiv 2408.00418), at "
        "a small scale: a convolutional encoder for the generated ad and one for the product cut-out (four 3 x 3 "
        f"convolutions of strides {strides}: 8 x 8 tokens each, dim {model.get('dim', 64)}), a text encoder (hashed "
        "words, one self-attention block), the feature filter (cross-attention from the product tokens to the text, "
        f"two 3 x 3 convolutions, residual), {blocks} over [CLS, ad, product, text], a 6-way head; the binary score "
        "is P(available).",
        "",
        "Depth and saliency maps (DPT, U2-Net in the paper): no pretrained weights here. Depth is dropped; the ad's "
        "gradient-magnitude map (numpy, in screening/preprocess.py) is a fourth input channel standing in for "
        "saliency. Without a product image the model runs in its image+text mode: learned tokens stand in for the "
        "cut-out (trained with the cut-out dropped from 25% of the rows).",
        "",
        "## Data",
        "Synthetic, the union of two generators. Renders (`c4u_engine.data.usability`): a product cut-out placed in "
        "a scene (studio, podium, room) with ad overlays as distractors; classes available (40%) and five defects "
        "(12% each) of graded magnitude (difficulty 0 = blatant .. 1 = subtle): space mismatch (floats, sinks), size "
        "mismatch (scale implausible for the product kind the text names), indistinctiveness (faded into a "
        "background of the product's hue), shape hallucination (another product or colour, a warp, an extra or "
        "missing part), unsuitable (truncated or damaged cut-out). Some defects are visible only against the "
        "cut-out or the text. The judge's creatives (`c4u_engine.data.creative_usability`): the ads the judge ranks "
        "(`data/creatives.py`: clutter, crops, close-ups, borders, insets, human models, 112-224 px) with the same "
        "defects applied to their product (42% usable, 10% each defect), and 8% with no product at all (ads without "
        "it, plain colours, gradients, noise), labelled indistinctiveness.",
        _training_line(t) + f"; test: {metrics['test_set']}.",
        "",
        "## Recipe",
        "```",
        command,
        "```",
        f"{t['steps']} steps of batch {t['batch']} (AdamW, cosine), CPU, "
        f"{t['threads']} thread{'s' if t['threads'] > 1 else ''}; the last "
        f"invocation took {t['seconds'] / 60:.0f} min (data, what training was left, baselines, evaluation)."
        + ("" if metrics["single_image_baselines"] else " This run trained no single-image baselines "
           "(`--baseline-seeds 0`).") + (f" {note}" if note else ""),
        "",
        "## Binary availability on the held-out split (threshold 0.5)",
        "| model | precision | recall | F1 | AP | 6-way accuracy |",
        "|---|---|---|---|---|---|",
        _binary_row("RFNet-style, ad + cut-out + text (shipped)", metrics["rfnet"]),
        _binary_row("same model, image+text mode (no cut-out)", metrics["rfnet_without_product_image"]),
    ]
    for i, m in enumerate(metrics["single_image_baselines"]):
        lines.append(_binary_row(f"single-image CNN baseline, seed {i}", m))
    for src, m in metrics.get("rfnet_by_source", {}).items():
        lines.append(_binary_row(f"shipped model on the {src} only", m))
    if evaluation:
        lines += _evaluation_lines(evaluation, reject_below)
    lines += ["", "Is the lead larger than the noise? Paired bootstrap over the test items (1,000 resamples), "
              "AP difference and its 95% interval:"]
    for i, d in enumerate(metrics["rfnet_minus_baseline_ap"]):
        lines.append(f"- RFNet - baseline seed {i}: {_pct(d['difference'])} points, 95% CI "
                     f"[{_pct(d['ci95'][0])}, {_pct(d['ci95'][1])}]")
    d = metrics["rfnet_minus_text_mode_ap"]
    lines.append(f"- with - without the product image: {_pct(d['difference'])} points, 95% CI "
                 f"[{_pct(d['ci95'][0])}, {_pct(d['ci95'][1])}]")
    if len(metrics["single_image_baselines"]) > 1:
        aps = [m["binary"]["ap"] for m in metrics["single_image_baselines"]]
        lines.append(f"- training-seed spread of the baseline: AP {', '.join(_pct(a) for a in aps)}")
    lines += ["", "## Per class (argmax of the 6-way head, held-out split)",
              "| class | precision | recall | F1 | support | recall without cut-out |", "|---|---|---|---|---|---|"]
    for c in CLASSES:
        m, n = metrics["rfnet"]["per_class"][c], metrics["rfnet_without_product_image"]["per_class"][c]
        lines.append(f"| {c} | {_pct(m['precision'])} | {_pct(m['recall'])} | {_pct(m['f1'])} | {m['support']} | "
                     f"{_pct(n['recall'])} |")
    lines += ["", "## Unusable ads caught (P(available) < 0.5), by difficulty and defect",
              "| slice | caught | without cut-out | n |", "|---|---|---|---|"]
    for k, v in metrics["caught_by_difficulty"].items():
        w = metrics["caught_by_difficulty_without_product_image"][k]
        name = "defect faded (indistinctiveness)" if k == "defect " else k
        lines.append(f"| {name} | {_pct(v['caught'])} | {_pct(w['caught'])} | {v['n']} |")
    lines += ["", "## Limits",
              "Trained on synthetic renders only: it knows this generator's scenes and defects, nothing of real "
              "AIGC ads; its numbers are not comparable with the paper's RF1M results (P 86.5, R 85.2, F1 85.8, "
              "AP 87.6). Train it on your own RF1M-like directory with `--data DIR` (data/usability_dataset.py).",
              "Its weak spot is shape hallucination (recall in the table above); the defects it catches least: "
              + ", ".join(f"{k} ({_pct(defects[k]['caught'])}%)" for k in weakest) + ". "
              "Both generators draw with the same shapes and colours (data/creatives.py): ads of other looks are "
              "outside what it has seen; that is what the rejection bound is for (unsure: kept and flagged).",
              ""]
    return "\n".join(lines)


def _training_line(t: dict) -> str:
    """What the model was trained on: a fixed set (epochs), or fresh samples for every batch (--fresh)."""
    start = f" from the weights of {t['init']} (`--init`)," if t.get("init") else ""
    if t.get("fresh"):
        share = t.get("renders_share", 0.6)
        return (f"Training:{start} {t['samples']} samples drawn fresh for every batch, none seen twice (seed "
                f"{t['seed']}: {round(100 * share)}% renders, {round(100 * (1 - share))}% the judge's creatives)")
    return (f"Training:{start} {t['samples']} samples (seed {t['seed']}"
            + (f": {t['renders']} renders, {t['creatives']} creatives" if "creatives" in t else "") + ")")


def _evaluation_lines(e: dict, reject_below: float | None) -> list[str]:
    """The fresh-seed results of screening_eval, as the card shows them."""
    bound = e.get("reject_below", reject_below)
    creatives = next(v for k, v in e.items() if k.startswith("creatives_seed_"))
    renders = next(v for k, v in e.items() if k.startswith("renders_seed_"))
    cseed = next(k for k in e if k.startswith("creatives_seed_")).rsplit("_", 1)[1]
    rseed = next(k for k in e if k.startswith("renders_seed_")).rsplit("_", 1)[1]
    demo = e["demo_creatives"]
    lines = ["", f"## Fresh seeds (`python -m c4u_engine.train.screening_eval`; screened out below P(available) "
             f"{bound}, kept and flagged between it and the threshold {e.get('threshold', 0.5)})",
             "| set | n | AP | usable kept | unusable screened out |", "|---|---|---|---|---|",
             f"| the judge's creatives, seed {cseed} (half usable, the rest split over the five defects) | "
             f"{creatives['n']} | {_pct(creatives['ap'])} | {_pct(creatives['usable_kept'])} | "
             f"{_pct(creatives['unusable_screened_out'])} |",
             f"| usability renders, seed {rseed} | {renders['n']} | {_pct(renders['ap'])} | "
             f"{_pct(renders['usable_kept'])} | {_pct(renders['unusable_screened_out'])} |",
             f"| creatives with no product, seed {cseed} | {e['no_product']['n']} | | | "
             f"{_pct(e['no_product']['screened_out'])} |",
             "", "Screened out, by defect, on the creatives: " + ", ".join(
                 f"{k} {_pct(v['screened_out'])}%" for k, v in creatives["screened_out_by_class"].items()) + ".",
             f"`c4u demo`'s creatives with their cut-out: {demo['kept']} of {demo['n']} kept "
             f"(P(available) {', '.join(str(p) for p in demo['p_available'])})."]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--command", default="python -m c4u_engine.train.screening_train OUT --seed 0")
    ap.add_argument("--note", default="")
    ap.add_argument("--eval", help="screening_eval's JSON results on fresh seeds")
    args = ap.parse_args(argv)
    d = Path(args.model_dir)
    metrics = json.loads((d / "metrics.json").read_text())
    config = d / "screen_config.json"
    cfg = json.loads(config.read_text()) if config.is_file() else {}
    evaluation = json.loads(Path(args.eval).read_text()) if args.eval else None
    (d / "MODEL_CARD.md").write_text(card(metrics, args.command, args.note, cfg.get("model"), evaluation,
                                          cfg.get("reject_below")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
