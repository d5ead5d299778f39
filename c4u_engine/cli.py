"""The `c4u` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from c4u_engine.errors import AllScreenedOutError, C4UError
from c4u_engine.runners import BACKENDS
from c4u_engine.runners.precision import PRECISIONS
from c4u_engine.selection.policy import MODES, ORDERS, STRATEGY_NAMES


def _cmd_info(args: argparse.Namespace) -> int:
    from c4u_engine.info import collect, format_info

    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _engine(args: argparse.Namespace, screening: bool):
    """The engine the select-like commands run on: the shared built-in one unless a flag asks for another."""
    from c4u_engine.api import Engine, default_engine

    custom_screen = screening and (args.screen_model is not None or args.screen_threshold is not None)
    custom = args.model or args.precision or args.device != "cpu" or args.backend != "auto" or custom_screen \
        or getattr(args, "lanes", None)
    if not custom:
        return default_engine()
    screener = None
    if custom_screen:
        from c4u_engine.screening import Screener

        screener = Screener(args.screen_model, threshold=args.screen_threshold)
    settings = {"lanes": args.lanes} if getattr(args, "lanes", None) else {}
    return Engine(_model_dir(args), device=args.device, backend=args.backend, precision=args.precision,
                  screen_model=screener, **settings)


def _select_options(args: argparse.Namespace, screening: bool) -> dict:
    """Engine.select keywords from the flags `c4u select` and `c4u batch` share."""
    return {"mode": args.mode, "strategy": args.strategy, "both_orders": False if args.one_order else None,
            "orders": args.orders, "top_k": args.top_k, "max_new_tokens": args.max_new_tokens,
            "strict": args.strict, "screen": screening}


def _cmd_select(args: argparse.Namespace) -> int:
    from c4u_engine.profile import Profile

    profile = Profile(title=args.title, queries=tuple(args.query or ()), extra=args.extra or "")
    screening = args.screen or args.product is not None
    engine = _engine(args, screening)
    selection = engine.select(args.images, profile, product_image=args.product, **_select_options(args, screening))
    if args.json:
        from c4u_engine.serving.schema import selection_json

        print(json.dumps(selection_json(selection, args.images), indent=2))
    else:
        print(selection.summary(names=args.images))
    if args.report:
        from c4u_engine.imaging import load_image
        from c4u_engine.selection.report import render_html

        thumbs = []
        screened = set(selection.stats.get("screening", {}).get("screened_out", ()))
        for i, path in enumerate(args.images):  # screened-out candidates are valid images: show them
            thumbs.append(None if i in selection.rejected and i not in screened else load_image(path).pixels)
        Path(args.report).write_text(render_html(selection, thumbs, profile_text=_profile_text(profile),
                                                 names=args.images), encoding="utf-8")
        print(f"report written to {args.report}", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Example creatives from the synthetic generator, screened for usability, then judged by the built-in model."""
    import tempfile

    if args.out:
        return _demo(args, Path(args.out))
    # No --out: the files live only as long as the demo (nothing is left in the temporary directory).
    with tempfile.TemporaryDirectory(prefix="c4u-demo-") as tmp:
        code = _demo(args, Path(tmp))
    print("(the creatives were written to a temporary directory, now removed: pass --out DIR to keep them)")
    return code


def _demo(args: argparse.Namespace, out: Path) -> int:
    import numpy as np

    from c4u_engine.api import Engine, default_engine
    from c4u_engine.data.creatives import render
    from c4u_engine.data.pairs import sample_group
    from c4u_engine.data.usability import _cutout
    from c4u_engine.profile import Profile

    group = sample_group(np.random.default_rng(args.seed), args.n)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, spec in enumerate(group.specs):
        path = out / f"creative_{i}.png"
        render(spec, args.size).save(path)
        paths.append(str(path))
    cutout = out / "product_cutout.png"  # what a user screens with: the product alone, on transparency
    _cutout(group.product.category, group.specs[0].product_hue, 256).save(cutout)
    names = [Path(p).name for p in paths]
    profile = Profile(title=group.product.title, queries=group.profile.queries)
    engine = Engine(_model_dir(args), precision=args.precision) if args.model or args.precision else default_engine()
    print(f"product: {profile.title}\nuser queries: {'; '.join(profile.queries)}\n{len(paths)} creatives and the "
          f"product cut-out in {out}")
    screen = not args.no_screen
    try:
        selection = engine.select(paths, profile, mode=args.mode, strategy=args.strategy, screen=screen,
                                  product_image=str(cutout) if screen else None)
    except AllScreenedOutError as exc:  # a demo still shows a ranking: say so, then rank them unscreened
        print(f"\n{exc}\n(ranking them without screening)")
        screen = False
        selection = engine.select(paths, profile, mode=args.mode, strategy=args.strategy)
    if screen:
        s = selection.stats["screening"]
        print(f"\nusability screening ({s['mode']}): {len(s['screened_out'])} of {s['screened']} screened out, "
              f"{len(s['flagged'])} flagged, in {1000 * s['seconds']:.0f} ms")
        for i, reason in sorted({**selection.rejected, **selection.flagged}.items()):
            print(f"  {names[i]}: {reason}")
    print(f"\nwinner: {names[selection.winner]}  (the generator's hidden appeal ranks {names[group.best]} best)")
    print("ranking, best first (won: opponents beaten of those met; mean P: the judge's probability of beating "
          "them, averaged):")
    for rank, i in enumerate(selection.ranking, 1):
        print(f"  {rank}. {names[i]}: {selection.score_label(i)}")
    print(f"\nwhy:\n{selection.explanation}" if selection.explanation else f"\n{selection.explanation_hint}")
    seconds = selection.stats.get("seconds", {}).get("total")
    print(f"\n{len(selection.comparisons)} comparisons on {engine.backend}/{engine.device} ({engine.precision}) in "
          f"{seconds:.2f} s")
    return 0


def _cmd_screen(args: argparse.Namespace) -> int:
    """Usability screening alone: each image usable, uncertain or unusable (with the most likely defect), or the
    error that kept it from being judged. Exit 0 when at least one image was judged."""
    from c4u_engine.imaging import load_image
    from c4u_engine.screening import Screener

    screener = Screener(args.model, threshold=args.threshold)
    loaded, errors = {}, {}
    for i, path in enumerate(args.images):
        try:
            loaded[i] = load_image(path)
        except C4UError as exc:
            errors[i] = f"{type(exc).__name__}: {exc}"
    judged = list(loaded)
    verdicts = dict(zip(judged, screener.screen([loaded[i] for i in judged], args.title, args.product,
                                                "full" if args.product is not None else "text"))) if judged else {}
    mode = "image+product+text" if args.product is not None else "image+text (weaker: no product image)"
    if args.json:
        results = []
        for i, path in enumerate(args.images):
            v = verdicts.get(i)
            results.append({"image": path, "error": errors[i]} if v is None else {
                "image": path, "status": v.status, "usable": v.usable, "label": v.label,
                "probability": v.probability, "p_available": v.p_available, "probs": v.probs})
        print(json.dumps({"mode": mode, "threshold": screener.threshold, "reject_below": screener.reject_below,
                          "results": results}, indent=2))
    else:
        print(f"screening mode: {mode}; usable when P(available) >= {screener.threshold}, unusable below "
              f"{screener.reject_below}, uncertain (kept by a selection, flagged) between")
        for i, path in enumerate(args.images):
            v = verdicts.get(i)
            if v is None:
                print(f"{path}: error: {errors[i]}")
            else:
                print(f"{path}: " + (f"usable (P(available)={v.p_available:.2f})" if v.usable else v.reason))
    if errors:
        print(f"c4u screen: {len(errors)} of {len(args.images)} image(s) could not be judged", file=sys.stderr)
    return 0 if verdicts else 2


def _cmd_batch(args: argparse.Namespace) -> int:
    """Selections for every group of a JSONL, resumable; locally, or on Ray Data with --ray."""
    options = _select_options(args, args.screen)
    if args.ray:
        from c4u_engine.batch.ray_data import run_on_ray

        summary = run_on_ray(args.input, args.out, options=options, resume=args.resume, actors=args.actors,
                             address=args.address, listen_all=args.ray_listen_all, model=args.model,
                             backend=args.backend, device=args.device, precision=args.precision,
                             max_in_flight=args.max_in_flight)
    else:
        from c4u_engine.batch.run import run_batch

        summary = run_batch(_engine(args, args.screen), args.input, args.out, options=options, resume=args.resume,
                            max_in_flight=args.max_in_flight, progress=None if not args.no_progress else False)
    print(f"c4u batch: {summary.text()}", file=sys.stderr)
    print(json.dumps(summary.to_dict()))
    if summary.interrupted:
        from c4u_engine.batch.run import INTERRUPTED_EXIT

        return INTERRUPTED_EXIT
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    """Pairwise accuracy (both orders), order consistency and group-winner accuracy on a CreativePair directory."""
    from c4u_engine.api import Engine
    from c4u_engine.builtin import builtin_model_dir
    from c4u_engine.train.evaluate import evaluate, format_report

    model = args.model or str(builtin_model_dir())
    engine = Engine(model, device=args.device, backend=args.backend, precision=args.precision)
    report = evaluate(model, args.data_dir, split=None if args.split == "all" else args.split,
                      modes=[m for m in args.modes.split(",") if m], max_pairs=args.max_pairs,
                      max_groups=args.max_groups, max_new_tokens=args.max_new_tokens, engine=engine)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP API on uvicorn (one Engine), or on Ray Serve with --ray (one Engine per replica)."""
    from c4u_engine.errors import BackendUnavailableError

    given = (("max_queued_requests", args.max_queued), ("max_active_requests", args.max_active),
             ("max_candidates", args.max_candidates), ("lanes", args.lanes))
    settings = {k: v for k, v in given if v is not None}
    try:
        from c4u_engine.serving.server import read_api_key
    except ImportError as exc:
        raise BackendUnavailableError(
            f"c4u serve needs the serve extra: pip install 'c4u_engine[serve]' ({exc})") from exc
    api_key = read_api_key(args.api_key_file)
    if args.ray:
        try:
            from c4u_engine.serving.ray_serve import run
        except ImportError as exc:
            raise BackendUnavailableError(f"--ray needs the ray extra: pip install 'c4u_engine[ray]' ({exc})") from exc
        return run(args.model, host=args.host, port=args.port, replicas=args.replicas, address=args.address,
                   api_key=api_key, engine_settings=settings, backend=args.backend, device=args.device,
                   precision=args.precision, listen_all=args.ray_listen_all)
    from c4u_engine.api import Engine
    from c4u_engine.builtin import builtin_model_dir
    from c4u_engine.serving.app import ServerLimits
    from c4u_engine.serving.server import serve

    engine = Engine(args.model or builtin_model_dir(), device=args.device, backend=args.backend,
                    precision=args.precision, **settings)
    limits = ServerLimits(max_body_bytes=args.max_body_mib << 20, max_image_bytes=args.max_image_mib << 20)
    return serve(engine, host=args.host, port=args.port, api_key=api_key, grace_s=args.grace_s, limits=limits)


def _model_dir(args: argparse.Namespace) -> str:
    from c4u_engine.builtin import builtin_model_dir

    return args.model or str(builtin_model_dir())


def _profile_text(profile) -> str:
    queries = "; ".join(profile.queries) or "(none)"
    return f"{profile.title} | queries: {queries}" + (f" | {profile.extra}" if profile.extra else "")


PRECISION_HELP = ("default: the checkpoint's dtype (fp32 on CPU); the built-in model also ships int8 (faster, "
                  "BENCHMARKS.md); other int8/int4 engines: c4u export CKPT --precision P")


def _add_selection_flags(parser: argparse.ArgumentParser) -> None:
    """The flags `c4u select` and `c4u batch` share: how to select, on which model, with which screener."""
    parser.add_argument("--mode", default="fast", choices=MODES)
    parser.add_argument("--strategy", default="knockout", choices=STRATEGY_NAMES)
    parser.add_argument("--one-order", action="store_true", help="judge each pair in one order only (--orders one)")
    parser.add_argument("--orders", choices=ORDERS, help="both (default: A/B and B/A, cancels position bias), one, or "
                        "adaptive (the second order only where the first is not decisive)")
    parser.add_argument("--top-k", type=int, help="knockout until K remain, then a round robin among them: the first "
                        "K of the ranking ordered as a round robin would order them")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--strict", action="store_true", help="fail on an invalid image instead of rejecting it")
    parser.add_argument("--model", help="a Qwen2.5-VL checkpoint directory (default: the built-in model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    parser.add_argument("--screen-model", help="a screening model directory (default: the built-in one)")
    parser.add_argument("--screen-threshold", type=float, help="P(available) at or above this is usable (default: "
                       "the screening model's); below its rejection bound a candidate is screened out, in between "
                       "kept and flagged")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="c4u", description="c4u_engine: select advertising creatives")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="version, native build, runtimes and devices")
    p_info.add_argument("--json", action="store_true")
    p_info.set_defaults(func=_cmd_info)

    p_sel = sub.add_parser("select", help="pick the creative a user is most likely to click")
    p_sel.add_argument("images", nargs="+", help="candidate creative image files")
    p_sel.add_argument("--title", required=True, help="product title")
    p_sel.add_argument("--query", action="append", help="a high-frequency search query of the user (repeatable)")
    p_sel.add_argument("--extra", help="extra user context")
    _add_selection_flags(p_sel)
    p_sel.add_argument("--json", action="store_true", help="print the selection as JSON")
    p_sel.add_argument("--report", help="write a self-contained HTML report here")
    p_sel.add_argument("--screen", action="store_true", help="screen out unusable creatives first (RFNet-style)")
    p_sel.add_argument("--product", help="the product cut-out screening compares with (implies --screen)")
    p_sel.set_defaults(func=_cmd_select)

    p_bat = sub.add_parser("batch", help="select for every group of a JSONL (groups.jsonl of python -m "
                           "c4u_engine.data make, or id/images/profile lines), resumable; --ray for Ray Data")
    p_bat.add_argument("input", help="the groups JSONL (image paths relative to it or absolute; no URLs)")
    p_bat.add_argument("--out", required=True, help="the results JSONL, appended to (with --ray too)")
    p_bat.add_argument("--resume", action="store_true", help="skip the ids --out already holds, append the rest")
    p_bat.add_argument("--max-in-flight", type=int, help="selections submitted at once (default: enough to fill "
                       "the engine's lanes)")
    p_bat.add_argument("--no-progress", action="store_true", help="no progress bar (it shows on a terminal only)")
    _add_selection_flags(p_bat)
    p_bat.add_argument("--screen", action="store_true", help="screen out unusable creatives first (a line's "
                       "product_image is the cut-out it compares with)")
    p_bat.add_argument("--lanes", type=int, help="schedulers side by side on the model (default: the engine's)")
    p_bat.add_argument("--ray", action="store_true", help="run on Ray Data: actors each holding one Engine")
    p_bat.add_argument("--address", help="a running Ray cluster to join (with --ray), e.g. HEAD:6379; without it "
                       "a local Ray instance starts, listening on 127.0.0.1 only")
    p_bat.add_argument("--actors", type=int, default=1, help="Ray actors, each one Engine (with --ray)")
    p_bat.add_argument("--ray-listen-all", action="store_true", help="let the local Ray instance listen on every "
                       "interface (Ray has no authentication: trusted networks only)")
    p_bat.set_defaults(func=_cmd_batch)

    p_demo = sub.add_parser("demo", help="screen, then select among example creatives made by the synthetic "
                            "generator")
    p_demo.add_argument("--n", type=int, default=6, help="number of creatives")
    p_demo.add_argument("--seed", type=int, default=7)
    p_demo.add_argument("--size", type=int, default=112)
    p_demo.add_argument("--mode", default="hybrid", choices=MODES)
    p_demo.add_argument("--strategy", default="knockout", choices=STRATEGY_NAMES)
    p_demo.add_argument("--model", help="a checkpoint directory (default: the built-in model)")
    p_demo.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    p_demo.add_argument("--out", help="where to write the creatives (default: a temporary directory)")
    p_demo.add_argument("--no-screen", action="store_true", help="do not screen the creatives for usability first")
    p_demo.set_defaults(func=_cmd_demo)

    p_scr = sub.add_parser("screen", help="usability screening: is each generated ad usable (RFNet-style)? A verdict "
                           "or an error per file; exit 0 when at least one was judged")
    p_scr.add_argument("images", nargs="+", help="generated ad image files")
    p_scr.add_argument("--product", help="the product cut-out (PNG with transparency); without it: image+text mode")
    p_scr.add_argument("--title", required=True, help="the product's description")
    p_scr.add_argument("--threshold", type=float, help="P(available) at or above this is usable (default: the "
                       "model's, 0.5 for the built-in one)")
    p_scr.add_argument("--model", help="a screening model directory (default: the built-in one)")
    p_scr.add_argument("--json", action="store_true")
    p_scr.set_defaults(func=_cmd_screen)

    p_srv = sub.add_parser("serve", help="the HTTP API (FastAPI + uvicorn; --ray for Ray Serve replicas)")
    p_srv.add_argument("--model", help="a checkpoint directory (default: the built-in model)")
    p_srv.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p_srv.add_argument("--port", type=int, default=8000)
    p_srv.add_argument("--api-key-file", help="require 'Authorization: Bearer <key>' with the key in this file")
    p_srv.add_argument("--grace-s", type=float, default=30.0, help="on SIGTERM, time to finish admitted requests")
    p_srv.add_argument("--max-queued", type=int, help="requests waiting beyond the running ones (503 beyond)")
    p_srv.add_argument("--max-active", type=int, help="requests the engine works on at once (the rest queue)")
    p_srv.add_argument("--max-candidates", type=int, help="images per request (413 beyond)")
    p_srv.add_argument("--lanes", type=int, help="schedulers side by side on the model (default: one per core, at "
                       "most 4, for onnxruntime on a CPU; 1 for one scheduler, e.g. several replicas on one machine)")
    p_srv.add_argument("--max-body-mib", type=int, default=64)
    p_srv.add_argument("--max-image-mib", type=int, default=16)
    p_srv.add_argument("--device", default="cpu")
    p_srv.add_argument("--backend", default="auto", choices=BACKENDS)
    p_srv.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    p_srv.add_argument("--ray", action="store_true", help="serve with Ray Serve (one Engine per replica)")
    p_srv.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (with --ray)")
    p_srv.add_argument("--address", help="a running Ray cluster to join (with --ray), e.g. HEAD:6379; without it "
                       "a local Ray instance starts, listening on 127.0.0.1 only")
    p_srv.add_argument("--ray-listen-all", action="store_true", help="let the local Ray instance listen on every "
                       "interface (Ray has no authentication: trusted networks only)")
    p_srv.set_defaults(func=_cmd_serve)

    sub.add_parser("export", add_help=False,
                   help="export a checkpoint (or the built-in model: builtin) to ONNX engines, fp32/int8/int4 "
                        "(needs the export extra: pip install 'c4u_engine[export]'; c4u export --help)")

    p_eval = sub.add_parser("eval", help="accuracy on a CreativePair-format directory (JSONL + images)")
    p_eval.add_argument("data_dir")
    p_eval.add_argument("--model", help="a checkpoint directory (default: the built-in model)")
    p_eval.add_argument("--split", default="test", help="pair split to read (train/val/test), or 'all'")
    p_eval.add_argument("--modes", default="fast,reason,hybrid")
    p_eval.add_argument("--max-pairs", type=int)
    p_eval.add_argument("--max-groups", type=int)
    p_eval.add_argument("--max-new-tokens", type=int, default=384)
    p_eval.add_argument("--device", default="cpu")
    p_eval.add_argument("--backend", default="auto", choices=BACKENDS)
    p_eval.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    p_eval.add_argument("--json", action="store_true")
    p_eval.set_defaults(func=_cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["export"]:  # its own parser (export/__main__.py): every option passes through
            from c4u_engine.export_command import run_export

            code = run_export(argv[1:])
            sys.stdout.flush()
            return code
        parser = build_parser()
        args = parser.parse_args(argv)
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is caught below
        return code
    except C4UError as exc:
        print(f"c4u: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (c4u ... | head): not an error of ours. Python would print a traceback when it
        # flushes stdout at exit; point stdout at /dev/null so that flush has nowhere to fail (Python's own advice).
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
