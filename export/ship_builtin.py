"""Release step: put a trained checkpoint into the package as the built-in model.

    python -m export.ship_builtin CKPT_DIR --eval-sft SFT_EVAL.json --eval-grpo GRPO_EVAL.json \
        [--eval "NAME=EVAL.json" ...] [--dest c4u_engine/builtin_model] [--recipe "python -m c4u_engine.train ..."]
        [--notes NOTES.md]

Copies the Hugging Face layout files (safetensors only), exports the ONNX graphs into DEST/onnx and the built-in
model's quantized engines (c4u_engine.builtin.SHIPPED_QUANTIZED) into DEST/onnx-<precision> (the CPU runtime, so
`c4u_engine.select` needs no torch), and writes DEST/MODEL_CARD.md from the evaluation reports that
`python -m c4u_engine.train eval --json` wrote. Refuses a checkpoint holding pickle files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from c4u_engine.errors import C4UError, InvalidInputError, ModelFormatError

SHIPPED = ("config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json",
           "tokenizer_config.json", "chat_template.json", "c4u_prompt.json", "c4u_model_spec.json",
           "model.safetensors")
METRICS = ("accuracy", "accuracy_original_order", "accuracy_swapped_order", "order_consistency",
           "both_orders_correct", "pair_winner_accuracy", "unparsed", "group_accuracy")


def copy_checkpoint(src: Path, dest: Path) -> None:
    pickles = [p.name for p in src.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    if pickles:
        raise ModelFormatError(f"{src}: refusing to ship pickle files {pickles}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in SHIPPED:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    if not (dest / "model.safetensors").is_file():
        raise ModelFormatError(f"{src}: no model.safetensors to ship")


def _table(reports: dict[str, dict]) -> str:
    lines = ["| checkpoint | mode | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for name, report in reports.items():
        for mode in ("fast", "reason", "hybrid"):
            if mode not in report:
                continue
            row = report[mode]
            cells = [f"{100 * row[m]:.1f}%" if isinstance(row.get(m), (int, float)) else "-" for m in METRICS]
            lines.append(f"| {name} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_card(dest: Path, reports: dict[str, dict], recipe: str) -> str:
    spec = json.loads((dest / "c4u_model_spec.json").read_text()) if (dest / "c4u_model_spec.json").is_file() else {}
    from safetensors import safe_open

    with safe_open(str(dest / "model.safetensors"), "np") as f:
        params = sum(int(__import__("numpy").prod(f.get_slice(k).get_shape())) for k in f.keys())
    n = {k: (v.get("pairs"), v.get("groups")) for k, v in reports.items()}
    return f"""# c4u_engine built-in model

A small judge of the Qwen2.5-VL architecture ({params / 1e6:.2f}M parameters) trained by this project with the
Creative4U recipe (Reason-to-Select): CoT-SFT, then GRPO. It compares two ad creatives for a product title and a
user's search queries and answers `<think>...</think><answer>A|B</answer>`.

## Data
Synthetic creatives from `c4u_engine.data` (Pillow renders of products, backgrounds, text, models and props,
layouts at 112 px) with a hidden click-appeal function that depends on the creative and the user's profile;
pairs kept only when the appeal gap is large; a comparative chain of thought per pair following the evaluation
protocol (identical / too similar, query match, title match, text, models and props, layout, product subject,
background, conclusion).

## Recipe
```
{recipe}
```
Model spec: `{json.dumps(spec)}`

## Accuracy (held-out synthetic test split; pairs and groups per checkpoint: {n})
{_table(reports)}

accuracy: ordered comparisons judged right (both orders of every pair); order_consistency: both orders name the
same creative; pair_winner_accuracy: the engine's combined pick for the pair; group_accuracy: the selected
winner of N-candidate groups (knockout, both orders).

## Limits
Trained on synthetic creatives only: it knows the generator's visual vocabulary and appeal rules, nothing of real
ads or real users. A real deployment uses a real Creative4U checkpoint (Qwen2.5-VL-7B fine-tuned on CreativePair)
through `c4u_engine.Engine(model_dir)`; this model exists so that `c4u_engine.select` works out of the box and so
that the engine's every path can be exercised on CPU.
"""


def _read_notes(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"--notes {path}: cannot read it as UTF-8 text ({exc})") from exc


def _named(entry: str) -> tuple[str, str]:
    name, sep, path = entry.partition("=")
    if not sep or not name.strip() or not path:
        raise InvalidInputError(f"--eval {entry!r}: expected NAME=PATH")
    return name.strip(), path


def _read_report(path: str) -> dict:
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"evaluation report {path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(report, dict):
        raise InvalidInputError(f"evaluation report {path}: expected a JSON object from `train eval --json`")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpt")
    p.add_argument("--dest", default=str(Path(__file__).resolve().parent.parent / "c4u_engine" / "builtin_model"))
    p.add_argument("--eval-sft", help="evaluation JSON of the SFT checkpoint")
    p.add_argument("--eval-grpo", help="evaluation JSON of the shipped (GRPO) checkpoint")
    p.add_argument("--eval", action="append", default=[], metavar="NAME=JSON",
                   help="more rows for the card (e.g. an earlier release), between SFT and the shipped checkpoint")
    p.add_argument("--recipe", default="python -m c4u_engine.train all OUT --seed 0")
    p.add_argument("--notes", help="a Markdown file appended to the card (status, history, findings)")
    args = p.parse_args(argv)
    try:
        from c4u_engine.builtin import SHIPPED_QUANTIZED
        from export.onnx_export import export_engine

        src, dest = Path(args.ckpt), Path(args.dest)
        # Everything read before DEST is replaced: a bad path or file changes nothing.
        notes = _read_notes(args.notes) if args.notes else ""
        rows = [("SFT", args.eval_sft), *(_named(e) for e in args.eval), ("SFT + GRPO (shipped)", args.eval_grpo)]
        reports = {name: _read_report(path) for name, path in rows if path}
        copy_checkpoint(src, dest)
        export_engine(dest)
        for precision in SHIPPED_QUANTIZED:
            export_engine(dest, precision=precision)
        card = model_card(dest, reports, args.recipe) + ("\n" + notes if notes else "")
        (dest / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        print(f"shipped {src} -> {dest}")
        return 0
    except C4UError as exc:
        print(f"ship_builtin: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
