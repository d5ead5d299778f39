"""Command line of the synthetic data generator.

    python -m c4u_engine.data make OUT_DIR --pairs N --seed S --size 224 [--groups G --group-size K ...]
    python -m c4u_engine.data split DIR [--val 0.05 --test 0.1 --seed S]
    python -m c4u_engine.data contact OUT.png [--pairs 8 --seed S --size 224]
"""

from __future__ import annotations

import argparse
import json
import sys

from c4u_engine.errors import C4UError


def _cmd_make(args: argparse.Namespace) -> int:
    from c4u_engine.data.pairs import make_dataset

    summary = make_dataset(args.out_dir, args.pairs, args.seed, args.size, n_groups=args.groups,
                           group_size=args.group_size, val_fraction=args.val, test_fraction=args.test,
                           min_gap=args.min_gap, workers=args.workers, overwrite=args.overwrite)
    images = 2 * summary.n_pairs + args.group_size * summary.n_groups
    print(json.dumps({"out_dir": str(summary.out_dir), "pairs": summary.n_pairs, "groups": summary.n_groups,
                      "splits": summary.splits, "labels": summary.labels, "seconds": round(summary.seconds, 2),
                      "images_per_second": round(images / max(summary.seconds, 1e-9), 1)}))
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from c4u_engine.data.splits import split_dataset

    print(json.dumps(split_dataset(args.dir, args.val, args.test, args.seed)))
    return 0


def _cmd_contact(args: argparse.Namespace) -> int:
    from c4u_engine.data.contact import contact_sheet

    contact_sheet(args.pairs, args.seed, args.size).save(args.out)
    print(args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m c4u_engine.data`."""
    parser = argparse.ArgumentParser(prog="python -m c4u_engine.data",
                                     description="synthetic ad creatives in the CreativePair format")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="write images + train/val/test.jsonl (+ groups.jsonl)")
    make.add_argument("out_dir")
    make.add_argument("--pairs", type=int, required=True)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--size", type=int, default=224)
    make.add_argument("--groups", type=int, default=0, help="N-candidate groups for winner accuracy")
    make.add_argument("--group-size", type=int, default=4)
    make.add_argument("--val", type=float, default=0.05)
    make.add_argument("--test", type=float, default=0.1)
    make.add_argument("--min-gap", type=float, default=0.5, help="keep pairs whose appeal gap is at least this")
    make.add_argument("--workers", type=int, default=1)
    make.add_argument("--overwrite", action="store_true", help="write into a non-empty directory")
    make.set_defaults(func=_cmd_make)
    split = sub.add_parser("split", help="re-split a dataset directory's pairs into train/val/test.jsonl")
    split.add_argument("dir")
    split.add_argument("--val", type=float, default=0.05)
    split.add_argument("--test", type=float, default=0.1)
    split.add_argument("--seed", type=int, default=0)
    split.set_defaults(func=_cmd_split)
    contact = sub.add_parser("contact", help="a contact sheet PNG of sampled pairs")
    contact.add_argument("out")
    contact.add_argument("--pairs", type=int, default=8)
    contact.add_argument("--seed", type=int, default=0)
    contact.add_argument("--size", type=int, default=224)
    contact.set_defaults(func=_cmd_contact)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on a C4UError, printed to stderr)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except C4UError as exc:
        print(f"python -m c4u_engine.data: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
