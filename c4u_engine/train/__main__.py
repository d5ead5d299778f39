"""Command line of the built-in model's training recipe (Creative4U: CoT-SFT, then GRPO; perception first).

The whole recipe, from a seed into one directory (the built-in model ends up in OUT/grpo):

    python -m c4u_engine.train all OUT --seed 0

Defaults: 20,000 synthetic pairs at 112 px (+200 groups of 4), a BPE capped at 2,048 entries (the generator's
vocabulary fills ~800), perception training of the new checkpoint's vision tower (1,500 steps of 64 images, ~1.1
s/step on a free core: see train/perception.py), SFT 1 epoch over ~17,000 training pairs x 2 orders x 3 forms
(chain of thought, direct answer, one-image description: see train/batching.py) = ~102,000 sequences at batch 16
(~6,400 steps, AdamW lr 5e-4, cosine), GRPO 100 steps of 4 prompts x 8 completions, then evaluation of both
checkpoints on 300 test pairs and 100 groups in fast, reason and hybrid modes.
Expected runtime on CPU with --threads 1 (measured on a shared 2-core box, ~0.65 of a core free): data ~4 min;
tokenizer seconds; SFT ~3.2 s/step here, ~2 s/step on a free core, i.e. ~2.5-4 h; GRPO ~10-20 s/step, i.e.
~20-30 min; evaluation ~30-60 min (reason and hybrid decode ~160-210 tokens per comparison). On a shared machine
keep --threads 1: a second OpenMP thread waiting for a busy core makes every matmul many times slower. `--device
cuda` runs SFT and GRPO on a GPU. An interrupted run continues with the same command plus --resume.

Stages one by one:

    python -m c4u_engine.train data OUT/data --pairs 20000 --seed 0 --groups 200
    python -m c4u_engine.train tokenizer --data OUT/data --out OUT/tokenizer.json
    python -m c4u_engine.train init --tokenizer OUT/tokenizer.json --out OUT/init --seed 0   # random weights
    python -m c4u_engine.train vision --data OUT/data --init OUT/init --out OUT/seen [--resume]   # see perception.py
    python -m c4u_engine.train sft --data OUT/data --init OUT/seen --out OUT/sft [--resume]
        [--forms reason,fast,perceive] [--vision-aux-weight W]
    python -m c4u_engine.train grpo --data OUT/data --init OUT/sft --out OUT/grpo [--resume]
    python -m c4u_engine.train eval --model OUT/grpo --data OUT/data [--modes fast,reason,hybrid] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from c4u_engine.errors import C4UError, InvalidInputError

_SFT_FLAGS = ("epochs", "max_steps", "batch_size", "lr", "warmup_steps", "weight_decay", "grad_clip", "save_every",
              "max_pairs", "vision_aux_weight", "device")
_GRPO_FLAGS = ("steps", "prompts_per_step", "group_size", "temperature", "max_new_tokens", "lr", "beta", "clip_eps",
               "micro_batch", "save_every", "max_pairs", "both_orders", "skip_uniform_groups", "section_weight",
               "device")
_VISION_FLAGS = ("steps", "batch_size", "lr", "warmup_steps", "weight_decay", "grad_clip", "save_every", "max_pairs",
                 "val_images", "device")
_ALL_SFT_FLAGS = tuple(n for n in _SFT_FLAGS if n != "device")  # `all` takes one --device for both stages
_ALL_GRPO_FLAGS = tuple(n for n in _GRPO_FLAGS if n != "device")
_ALL_VISION_FLAGS = tuple(n for n in _VISION_FLAGS if n != "device")


def _add_fields(parser: argparse.ArgumentParser, cls: type, names: tuple[str, ...], prefix: str = "") -> None:
    """--name flags for dataclass fields, typed and defaulted from the dataclass (None: keep its default)."""
    by_name = {f.name: f for f in fields(cls)}
    for name in names:
        f = by_name[name]
        if str(f.type) == "bool":  # a switch: present = True, absent = the dataclass default
            parser.add_argument(f"--{prefix}{name.replace('_', '-')}", dest=f"{prefix.replace('-', '_')}{name}",
                                action="store_const", const=True, default=None, help=f"default: {f.default}")
            continue
        kind = {"int": int, "float": float, "str": str}.get(str(f.type).split(" |")[0], str)
        parser.add_argument(f"--{prefix}{name.replace('_', '-')}", dest=f"{prefix.replace('-', '_')}{name}",
                            type=kind, default=None, help=f"default: {f.default}")


def _overrides(args: argparse.Namespace, names: tuple[str, ...], prefix: str = "") -> dict:
    values = {name: getattr(args, prefix + name) for name in names}
    return {k: v for k, v in values.items() if v is not None}


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _cmd_data(args: argparse.Namespace) -> int:
    from c4u_engine.train.pipeline import make_data

    print(json.dumps(make_data(args.out_dir, args.pairs, args.seed, args.groups, args.size, args.workers)))
    return 0


def _cmd_tokenizer(args: argparse.Namespace) -> int:
    from c4u_engine.train.pipeline import build_tokenizer

    size = build_tokenizer(args.data, args.out, args.vocab_size, args.split)
    print(json.dumps({"tokenizer": args.out, "tokens": size}))
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    from c4u_engine.train.sft import SFTConfig, prepare_checkpoint

    if Path(args.out).exists() and any(Path(args.out).iterdir()):
        raise InvalidInputError(f"{args.out} is not empty; a new checkpoint needs an empty or new directory")
    prepare_checkpoint(SFTConfig("", args.out, args.tokenizer, seed=args.seed))
    print(json.dumps({"checkpoint": args.out, "seed": args.seed}))
    return 0


def _cmd_sft(args: argparse.Namespace) -> int:
    from c4u_engine.train.sft import SFTConfig, run_sft

    _threads(args)
    forms = {"forms": args.forms} if args.forms else {}
    config = SFTConfig(args.data, args.out, args.tokenizer, init_dir=args.init, seed=args.seed,
                       **_overrides(args, _SFT_FLAGS), **forms)
    result = run_sft(config, resume=args.resume, progress=not args.quiet)
    print(json.dumps({"out_dir": str(result.out_dir), "steps": result.steps, "last_loss": result.last_loss,
                      "seconds_per_step": round(result.seconds_per_step, 3)}))
    return 0


def _cmd_vision(args: argparse.Namespace) -> int:
    from c4u_engine.train.perception import PerceptionConfig, run_perception

    _threads(args)
    config = PerceptionConfig(args.data, args.init, args.out, seed=args.seed, **_overrides(args, _VISION_FLAGS))
    print(json.dumps(run_perception(config, resume=args.resume, progress=not args.quiet)))
    return 0


def _cmd_grpo(args: argparse.Namespace) -> int:
    from c4u_engine.train.grpo import GRPOConfig, run_grpo

    _threads(args)
    config = GRPOConfig(args.data, args.init, args.out, seed=args.seed, **_overrides(args, _GRPO_FLAGS))
    print(json.dumps(run_grpo(config, resume=args.resume, progress=not args.quiet)))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from c4u_engine.train.evaluate import evaluate, format_report

    _threads(args)
    split = None if args.split == "all" else args.split
    report = evaluate(args.model, args.data, split=split, modes=args.modes.split(","), max_pairs=args.max_pairs,
                      max_groups=args.max_groups, max_new_tokens=args.max_new_tokens)
    print(format_report(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    return 0


def _cmd_all(args: argparse.Namespace) -> int:
    from c4u_engine.train.pipeline import RecipeConfig, run_all

    _threads(args)
    device = {"device": args.device} if args.device else {}
    config = RecipeConfig(args.out_dir, seed=args.seed, pairs=args.pairs, groups=args.groups, workers=args.workers,
                          vision={**_overrides(args, _ALL_VISION_FLAGS, "vision_"), **device},
                          sft={**_overrides(args, _ALL_SFT_FLAGS, "sft_"), **device},
                          grpo={**_overrides(args, _ALL_GRPO_FLAGS, "grpo_"), **device},
                          eval_pairs=args.eval_pairs, eval_groups=args.eval_groups,
                          eval_modes=tuple(args.modes.split(",")))
    run_all(config, resume=args.resume, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m c4u_engine.train`."""
    from c4u_engine.train.grpo import GRPOConfig
    from c4u_engine.train.perception import PerceptionConfig
    from c4u_engine.train.sft import SFTConfig

    parser = argparse.ArgumentParser(prog="python -m c4u_engine.train",
                                     description="train the built-in Creative4U judge (CoT-SFT, then GRPO)")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    data = sub.add_parser("data", help="synthetic CreativePair dataset at 112 px")
    data.add_argument("out_dir")
    data.add_argument("--pairs", type=int, default=20000)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--groups", type=int, default=200)
    data.add_argument("--size", type=int, default=112)
    data.add_argument("--workers", type=int, default=1)
    data.set_defaults(func=_cmd_data)

    tok = sub.add_parser("tokenizer", help="train the byte-level BPE on a dataset's prompts and reasonings")
    tok.add_argument("--data", required=True)
    tok.add_argument("--out", required=True, help="tokenizer.json to write")
    tok.add_argument("--vocab-size", type=int, default=2048)
    tok.add_argument("--split", default="train")
    tok.set_defaults(func=_cmd_tokenizer)

    init = sub.add_parser("init", help="a new checkpoint of the built-in architecture with the seed's random weights")
    init.add_argument("--tokenizer", required=True, help="tokenizer.json (from the tokenizer stage)")
    init.add_argument("--out", required=True, help="the checkpoint directory to create")
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(func=_cmd_init)

    sft = sub.add_parser("sft", help="CoT-SFT into a checkpoint directory")
    sft.add_argument("--data", required=True)
    sft.add_argument("--out", required=True, help="checkpoint directory (created, or fine-tuned if it exists)")
    sft.add_argument("--tokenizer", default=None, help="tokenizer.json, to create a new checkpoint in --out")
    sft.add_argument("--init", default=None, help="or: a checkpoint to start from (copied into --out)")
    sft.add_argument("--seed", type=int, default=0)
    sft.add_argument("--resume", action="store_true", help="continue from the newest state in OUT_state/")
    sft.add_argument("--forms", default=None, type=lambda v: tuple(f for f in v.split(",") if f),
                     help="comma-separated training forms among reason,fast,perceive (default: reason,fast)")
    _add_fields(sft, SFTConfig, _SFT_FLAGS)
    common(sft)
    sft.set_defaults(func=_cmd_sft)

    def stage(name: str, summary: str, init_help: str, data_help: str | None = None) -> argparse.ArgumentParser:
        """A training stage from a checkpoint: --data, --init, --out, --seed, --resume."""
        p = sub.add_parser(name, help=summary)
        p.add_argument("--data", required=True, help=data_help)
        p.add_argument("--init", required=True, help=init_help)
        p.add_argument("--out", required=True)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--resume", action="store_true")
        return p

    vision = stage("vision", "perception training: the vision tower learns the creative attributes",
                   "the checkpoint whose vision tower trains", "a synthetic CreativePair directory (generator specs)")
    _add_fields(vision, PerceptionConfig, _VISION_FLAGS)
    common(vision)
    vision.set_defaults(func=_cmd_vision)

    grpo = stage("grpo", "GRPO from an SFT checkpoint", "the SFT checkpoint (policy start and KL reference)")
    _add_fields(grpo, GRPOConfig, _GRPO_FLAGS)
    common(grpo)
    grpo.set_defaults(func=_cmd_grpo)

    ev = sub.add_parser("eval", help="pairwise and group accuracy of a checkpoint")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True)
    ev.add_argument("--split", default="test", help="pair split to read, or 'all'")
    ev.add_argument("--modes", default="fast,reason,hybrid")
    ev.add_argument("--max-pairs", type=int, default=None)
    ev.add_argument("--max-groups", type=int, default=None)
    ev.add_argument("--max-new-tokens", type=int, default=384)
    ev.add_argument("--json", default=None, help="also write the report as JSON here")
    common(ev)
    ev.set_defaults(func=_cmd_eval)

    everything = sub.add_parser("all", help="data -> tokenizer -> vision -> sft -> grpo -> eval into one directory")
    everything.add_argument("out_dir")
    everything.add_argument("--seed", type=int, default=0)
    everything.add_argument("--pairs", type=int, default=20000)
    everything.add_argument("--groups", type=int, default=200)
    everything.add_argument("--workers", type=int, default=1, help="processes generating the data")
    everything.add_argument("--eval-pairs", type=int, default=300)
    everything.add_argument("--eval-groups", type=int, default=100)
    everything.add_argument("--modes", default="fast,reason,hybrid")
    everything.add_argument("--device", default=None, help="cpu (default) or cuda, for SFT and GRPO")
    everything.add_argument("--resume", action="store_true")
    _add_fields(everything, PerceptionConfig, _ALL_VISION_FLAGS, "vision-")
    _add_fields(everything, SFTConfig, _ALL_SFT_FLAGS, "sft-")
    _add_fields(everything, GRPOConfig, _ALL_GRPO_FLAGS, "grpo-")
    common(everything)
    everything.set_defaults(func=_cmd_all)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on a C4UError, printed to stderr)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except C4UError as exc:
        print(f"python -m c4u_engine.train: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
