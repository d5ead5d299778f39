"""Ranking strategies on the built-in model: top-k against a full round robin, adaptive orders against both orders.

    python benchmarks/bench_ranking_strategies.py --groups 200 --seed 23
    python benchmarks/bench_ranking_strategies.py --tune --groups 200 --seed 11   # choosing DECISIVE_P

Groups of 8 synthetic creatives (c4u_engine.data.pairs.make_dataset, 224 px, in a temporary directory; each group
has the "best" creative of its hidden appeal), judged in fast mode by c4u_engine.api.default_engine(), every
selection a cold request (use_cache=False). Per group, interleaved: a full round robin in both orders, top-k (k=3,
knockout then a round robin of the finalists), the knockout in both orders, adaptive orders and one order.
(a) top-k against the round robin's top k: top-1, top-k set and exact top-k order agreement, comparisons, seconds.
(b) adaptive against the both-order knockout: winner agreement, comparisons saved, winner accuracy against "best".
Seconds: the sum over groups, and the median of the per-group ratios (this box drifts between and within runs).

--tune (use a seed other than the reported one): only the round robin is run; every knockout is then replayed
from its comparisons (the judge's P(A) of an ordered pair does not depend on the tournament it is judged in), for
each threshold of --thresholds: how many first orders it would let settle a match and how many of those pick
another winner than both orders together; the replayed knockout's winner agreement with the both-order knockout,
accuracy and comparisons. The runs check the replay: it must give the adaptive engine run's winner.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402

from c4u_engine.api import default_engine  # noqa: E402
from c4u_engine.data.creative_pair import load_groups  # noqa: E402
from c4u_engine.data.pairs import make_dataset  # noqa: E402
from c4u_engine.profile import Profile  # noqa: E402
from c4u_engine.selection import DECISIVE_P, run_tournament  # noqa: E402

GROUP_SIZE = 8


def make_groups(root: Path, n_groups: int, seed: int, size: int):
    make_dataset(root, n_pairs=2, seed=seed, size=size, n_groups=n_groups, group_size=GROUP_SIZE)
    return load_groups(root)


def timed(engine, images, profile, **options):
    t0 = time.perf_counter()
    sel = engine.select(images, profile, mode="fast", use_cache=False, **options)
    return sel, time.perf_counter() - t0


def replay(round_robin, **options):
    """The tournament `options` describe, replayed from a both-order round robin's comparisons; its winner as an
    input index. The candidates are the round robin's (duplicates dropped), renumbered 0.. in input order."""
    ids = sorted({c.first for c in round_robin.comparisons} | {round_robin.winner})
    local = {i: k for k, i in enumerate(ids)}
    known = {(local[c.first], local[c.second]): dataclasses.replace(c, first=local[c.first], second=local[c.second])
             for c in round_robin.comparisons}
    out = run_tournament(len(ids), lambda pairs: [known[p] for p in pairs], **options)
    return ids[out.winner], out


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def pct(hits: int, n: int) -> str:
    return f"{hits}/{n} ({100 * hits / n:.1f}%)"


def run(args) -> dict:
    engine = default_engine()
    with tempfile.TemporaryDirectory(prefix="c4u-bench-ranking-") as tmp:
        groups = make_groups(Path(tmp), args.groups, args.seed, args.size)
        cases = [([str(p) for p in g.images], Profile(title=g.product_title, queries=g.query), g.best)
                 for g in groups]
        timed(engine, *cases[0][:2], strategy="knockout")  # warm-up
        runs = []
        for images, profile, best in cases:
            row = {"best": best, "rr": timed(engine, images, profile, strategy="round_robin")}
            if not args.tune:
                row["topk"] = timed(engine, images, profile, strategy="knockout", top_k=args.k)
                row["ko"] = timed(engine, images, profile, strategy="knockout", orders="both")
                row["adaptive"] = timed(engine, images, profile, strategy="knockout", orders="adaptive")
                row["one"] = timed(engine, images, profile, strategy="knockout", orders="one")
            runs.append(row)
    return tune(runs, args) if args.tune else summarize(runs, args)


def summarize(runs: list[dict], args) -> dict:
    n, k = len(runs), args.k
    rr = [r["rr"][0] for r in runs]
    topk = [r["topk"][0] for r in runs]
    ko, ada, one = ([r[name][0] for r in runs] for name in ("ko", "adaptive", "one"))
    seconds = {name: sum(r[name][1] for r in runs) for name in ("rr", "topk", "ko", "adaptive", "one")}

    def ratio(a: str, b: str) -> float:
        return statistics.median(r[a][1] / r[b][1] for r in runs)

    replayed = [replay(r, strategy="knockout", orders="adaptive")[0] for r in rr]
    out = {
        "groups": n, "seed": args.seed, "k": k, "decisive_p": DECISIVE_P, "machine": report.machine(),
        "top_k": {
            "top1_agreement": sum(t.winner == r.winner for t, r in zip(topk, rr)),
            "topk_set_agreement": sum(set(t.ranking[:k]) == set(r.ranking[:k]) for t, r in zip(topk, rr)),
            "topk_order_agreement": sum(t.ranking[:k] == r.ranking[:k] for t, r in zip(topk, rr)),
            "knockout": {"top1_agreement": sum(t.winner == r.winner for t, r in zip(ko, rr)),
                         "topk_set_agreement": sum(set(t.ranking[:k]) == set(r.ranking[:k]) for t, r in zip(ko, rr)),
                         "topk_order_agreement": sum(t.ranking[:k] == r.ranking[:k] for t, r in zip(ko, rr))},
            "comparisons": {"top_k": mean(len(t.comparisons) for t in topk),
                            "round_robin": mean(len(r.comparisons) for r in rr)},
            "rounds": {"top_k": mean(t.stats["rounds"] for t in topk),
                       "round_robin": mean(r.stats["rounds"] for r in rr)},
            "accuracy": {"top_k": sum(t.winner == r["best"] for t, r in zip(topk, runs)),
                         "round_robin": sum(s.winner == r["best"] for s, r in zip(rr, runs))},
            "seconds": {"top_k": seconds["topk"], "round_robin": seconds["rr"],
                        "median_ratio_top_k_to_round_robin": ratio("topk", "rr"),
                        "median_ratio_knockout_to_round_robin": ratio("ko", "rr")},
        },
        "orders": {
            "winner_agreement_adaptive": sum(a.winner == b.winner for a, b in zip(ada, ko)),
            "winner_agreement_one": sum(a.winner == b.winner for a, b in zip(one, ko)),
            "comparisons": {"both": mean(len(s.comparisons) for s in ko),
                            "adaptive": mean(len(s.comparisons) for s in ada),
                            "one": mean(len(s.comparisons) for s in one)},
            "comparisons_saved_adaptive": mean(s.stats["comparisons_saved"] for s in ada),
            "rounds": {"both": mean(s.stats["rounds"] for s in ko), "adaptive": mean(s.stats["rounds"] for s in ada)},
            "accuracy": {name: sum(s.winner == r["best"] for s, r in zip(sels, runs))
                         for name, sels in (("both", ko), ("adaptive", ada), ("one", one))},
            "seconds": {"both": seconds["ko"], "adaptive": seconds["adaptive"], "one": seconds["one"],
                        "median_ratio_adaptive_to_both": ratio("adaptive", "ko")},
            "replayed_from_round_robin_agrees": sum(w == a.winner for w, a in zip(replayed, ada)),
        },
    }
    return out


def tune(runs: list[dict], args) -> dict:
    """Per threshold: how often a first order that clears it picks another winner than both orders together, and
    the knockout replayed with it."""
    rr = [r["rr"][0] for r in runs]
    firsts = []  # (max(P, 1 - P) of one order, whether its winner differs from the two orders' together)
    for sel in rr:
        p = {(c.first, c.second): c.p_first for c in sel.comparisons}
        for (a, b), pa in p.items():
            together = (pa + 1.0 - p[(b, a)]) / 2
            firsts.append((max(pa, 1.0 - pa), (pa > 0.5) != (together > 0.5)))
    both = [replay(s, strategy="knockout", orders="both") for s in rr]
    one = [replay(s, strategy="knockout", orders="one") for s in rr]
    rows = []
    for label, threshold, outs in [("both", None, both), ("one", None, one)] + [
            (f"adaptive {t}", t, [replay(s, strategy="knockout", orders="adaptive", decisive_p=t) for s in rr])
            for t in args.thresholds]:
        settled = [flip for conf, flip in firsts if threshold is not None and conf >= threshold]
        rows.append({"orders": label, "first_orders_settling": len(settled), "of_which_wrong": sum(settled),
                     "agreement": sum(o[0] == b[0] for o, b in zip(outs, both)),
                     "accuracy": sum(o[0] == r["best"] for o, r in zip(outs, runs)),
                     "comparisons": mean(len(o[1].comparisons) for o in outs)})
    k = args.k
    top = [replay(s, strategy="knockout", top_k=k)[1] for s in rr]
    full = [replay(s, strategy="round_robin")[1] for s in rr]
    top_k_sets = sum(set(t.ranking[:k]) == set(f.ranking[:k]) for t, f in zip(top, full))
    return {"groups": len(runs), "seed": args.seed, "machine": report.machine(), "ordered_comparisons": len(firsts),
            "tune": rows, "k": k, "top_k_set_agreement": top_k_sets}


def print_markdown(out: dict) -> None:
    n = out["groups"]
    print(f"{n} groups of {GROUP_SIZE}, seed {out['seed']}, built-in model, fast mode; {out['machine']}")
    if "tune" in out:
        print(f"first orders: of {out['ordered_comparisons']} ordered comparisons, those at or above the threshold "
              "and how many of them pick another winner than both orders together")
        print(report.markdown_table(["knockout orders", "first orders settling", "of which wrong",
                                     "winner = both-order knockout's", "winner = best", "comparisons / group"],
                                    [[r["orders"], r["first_orders_settling"] if r["orders"].startswith("ad") else "",
                                      r["of_which_wrong"] if r["orders"].startswith("ad") else "",
                                      pct(r["agreement"], n), pct(r["accuracy"], n), f"{r['comparisons']:.2f}"]
                                     for r in out["tune"]]))
        print(f"\ntop-k (k={out['k']}) replayed: the round robin's top {out['k']} (as a set) in "
              f"{pct(out['top_k_set_agreement'], n)} groups")
        return
    a, b, k = out["top_k"], out["orders"], out["k"]
    ko = a["knockout"]
    print(f"\n(a) top-k (k={k}) against the full round robin's top {k} (both orders; the plain knockout's ranking "
          "for reference)")
    print(report.markdown_table(
        ["", "top-k", "round robin", "knockout"],
        [["top-1 agreement", pct(a["top1_agreement"], n), "", pct(ko["top1_agreement"], n)],
         [f"top-{k} set agreement", pct(a["topk_set_agreement"], n), "", pct(ko["topk_set_agreement"], n)],
         [f"top-{k} exact order agreement", pct(a["topk_order_agreement"], n), "",
          pct(ko["topk_order_agreement"], n)],
         ["comparisons / group", f"{a['comparisons']['top_k']:.2f}", f"{a['comparisons']['round_robin']:.2f}",
          f"{b['comparisons']['both']:.2f}"],
         ["rounds / group", f"{a['rounds']['top_k']:.2f}", f"{a['rounds']['round_robin']:.2f}",
          f"{b['rounds']['both']:.2f}"],
         ["winner = best", pct(a["accuracy"]["top_k"], n), pct(a["accuracy"]["round_robin"], n),
          pct(b["accuracy"]["both"], n)],
         ["seconds (sum)", f"{a['seconds']['top_k']:.2f}", f"{a['seconds']['round_robin']:.2f}",
          f"{b['seconds']['both']:.2f}"],
         ["median per-group time ratio to the round robin", f"{a['seconds']['median_ratio_top_k_to_round_robin']:.3f}",
          "1", f"{a['seconds']['median_ratio_knockout_to_round_robin']:.3f}"]]))
    print(f"\n(b) knockout orders, adaptive with DECISIVE_P = {out['decisive_p']}")
    print(report.markdown_table(
        ["", "both", "adaptive", "one"],
        [["winner = both-order knockout's", "", pct(b["winner_agreement_adaptive"], n),
          pct(b["winner_agreement_one"], n)],
         ["comparisons / group", f"{b['comparisons']['both']:.2f}", f"{b['comparisons']['adaptive']:.2f}",
          f"{b['comparisons']['one']:.2f}"],
         ["second orders saved / group", "0", f"{b['comparisons_saved_adaptive']:.2f}", ""],
         ["rounds / group", f"{b['rounds']['both']:.2f}", f"{b['rounds']['adaptive']:.2f}", ""],
         ["winner = best", pct(b["accuracy"]["both"], n), pct(b["accuracy"]["adaptive"], n),
          pct(b["accuracy"]["one"], n)],
         ["seconds (sum)", f"{b['seconds']['both']:.2f}", f"{b['seconds']['adaptive']:.2f}",
          f"{b['seconds']['one']:.2f}"],
         ["median per-group time ratio", "1", f"{b['seconds']['median_ratio_adaptive_to_both']:.3f}", ""]]))
    print(f"\nadaptive replayed from the round robin's comparisons gives the engine's winner in "
          f"{pct(b['replayed_from_round_robin_agrees'], n)} groups")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--tune", action="store_true", help="replay knockouts at each --thresholds instead")
    parser.add_argument("--thresholds", type=float, nargs="+",
                        default=[0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    out = run(args)
    print_markdown(out)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
