"""The `c4u` command line."""

from __future__ import annotations

import argparse
import json
import sys

from c4u_engine.errors import C4UError


def _cmd_info(args: argparse.Namespace) -> int:
    from c4u_engine.info import collect, format_info

    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="c4u", description="c4u_engine: select advertising creatives")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="version, native build, runtimes and devices")
    p_info.add_argument("--json", action="store_true")
    p_info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except C4UError as exc:
        print(f"c4u: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
