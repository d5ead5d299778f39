"""Train the screening model (RFNet-style) and the single-image baseline on synthetic usability data, evaluate both
on a held-out set, export the model and write its card.

    python -m c4u_engine.train.screening_train OUT [--steps 3600] [--seed 0] [--data DIR]

CPU, one thread by default. Seeded: data from (seed, index), batches from (seed, epoch), the product-image dropout
from (seed, step); a run resumed from its state (OUT_state/, safetensors: weights, AdamW moments, step) continues
as the uninterrupted run would. A progress line (step, loss, samples/s, ETA) every 50 steps.
The held-out test set is drawn with another seed (seed + 1), so no test sample is a training sample.
--fresh draws new samples for every batch (no epochs: no sample is seen twice); --init MODEL_DIR starts from a
shipped model's weights (a second stage of training: fresh optimizer, schedule and samples).
--data DIR trains on a user's RF1M-like directory instead (train.jsonl, test.jsonl; data/usability_dataset.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from c4u_engine.screening.classes import CLASSES
from c4u_engine.screening.rfnet import RFNet, RFNetConfig, SingleImageCNN
from c4u_engine.train.screening_metrics import bootstrap_ap_difference, classification_report

PRODUCT_DROPOUT = 0.25  # share of training batches' rows seen without the product image (the image+text mode)


def _lr(step: int, base: float, total: int, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup)))))


def _batch_indices(n: int, batch: int, seed: int, step: int) -> np.ndarray:
    start = step * batch
    out = []
    while len(out) < batch:
        epoch, pos = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(perm[pos: pos + batch - len(out)].tolist())
    return np.array(out)


def _tensors(data: dict, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(data["generated"][idx]), torch.from_numpy(data["product"][idx]),
            torch.from_numpy(data["text"][idx]))


def _save_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        for k, v in opt.state.get(p, {}).items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().clone().contiguous()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"step": str(step)})
    tmp.replace(path)  # atomic: an interrupted save leaves the previous state


def _load_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        step = int(f.metadata()["step"])
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for i, p in enumerate(model.parameters()):
        st = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        if st:
            opt.state[p] = st
    return step


def train(model: torch.nn.Module, data, *, steps: int, seed: int, state: Path, name: str, batch: int = 64,
          lr: float = 1e-3, product_dropout: float = PRODUCT_DROPOUT, every: int = 200, log=sys.stderr) -> None:
    """Train in place from `state` (if present) to `steps`; states saved every `every` steps and at the end.
    data: the training arrays (a dict, reshuffled each epoch) or a FreshBatches (new samples every step)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    step = _load_state(state, model, opt) if state.is_file() else 0
    if step:
        print(f"[{name}] resumed at step {step}/{steps}", file=log, flush=True)
    t0, losses = time.perf_counter(), []
    model.train()
    for s in range(step, steps):
        torch.manual_seed(seed * 1_000_003 + s)
        if isinstance(data, dict):  # a fixed training set, reshuffled each epoch
            rows, idx = data, _batch_indices(len(data["label"]), batch, seed, s)
        else:  # FreshBatches: new samples every step
            rows = data.batch(s, batch)
            idx = np.arange(len(rows["label"]))
        g, p, t = _tensors(rows, idx)
        has = torch.from_numpy((np.random.default_rng([seed, s, 1]).random(batch) >= product_dropout)
                               .astype(np.float32))
        for group in opt.param_groups:
            group["lr"] = _lr(s, lr, steps)
        loss = F.cross_entropy(model(g, p, t, has), torch.from_numpy(rows["label"][idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        done = s + 1
        if done % 50 == 0 or done == steps:
            rate = (done - step) * batch / (time.perf_counter() - t0)
            eta = (steps - done) * batch / rate
            print(f"[{name}] step {done}/{steps} loss {np.mean(losses[-50:]):.4f} {rate:.0f} samples/s "
                  f"ETA {eta / 60:.1f} min", file=log, flush=True)
        if done % every == 0 or done == steps:
            _save_state(state, model, opt, done)
    model.eval()


@torch.no_grad()
def predict(model: torch.nn.Module, data: dict, has_product: bool = True, batch: int = 256) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(data["label"]), batch):
        idx = np.arange(i, min(i + batch, len(data["label"])))
        g, p, t = _tensors(data, idx)
        has = torch.full((len(idx),), 1.0 if has_product else 0.0)
        out.append(model(g, p, t, has).softmax(-1).numpy())
    return np.concatenate(out)


def _by_difficulty(data: dict, avail: np.ndarray, threshold: float) -> dict:
    """Share of unusable test samples caught (P(available) < threshold), by defect kind and difficulty third."""
    out = {}
    unusable = data["label"] != 0
    for lo, hi in ((0.0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.01)):
        m = unusable & (data["difficulty"] >= lo) & (data["difficulty"] < hi)
        out[f"difficulty {lo:.2f}-{min(hi, 1):.2f}"] = {"caught": float((avail[m] < threshold).mean()),
                                                         "n": int(m.sum())}
    for d in sorted(set(data["defect"][unusable].tolist())):
        m = unusable & (data["defect"] == d)
        out[f"defect {d}"] = {"caught": float((avail[m] < threshold).mean()), "n": int(m.sum())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m c4u_engine.train.screening_train", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=24000)
    ap.add_argument("--n-test", type=int, default=3000)
    ap.add_argument("--n-creatives", type=int, default=16000, help="training samples made from the judge's "
                    "creatives (data/creative_usability.py), beside --n-train renders of the usability generator")
    ap.add_argument("--n-test-creatives", type=int, default=1000)
    ap.add_argument("--test-seed", type=int, help="seed of the held-out test set (default: seed + 1)")
    ap.add_argument("--steps", type=int, default=3600)
    ap.add_argument("--baseline-steps", type=int, default=3600)
    ap.add_argument("--baseline-seeds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", help="a user's RF1M-like directory (train.jsonl, test.jsonl) instead of synthetic data")
    ap.add_argument("--encoder-strides", default="2,1,2,2", help="the RFNet's image-encoder strides (product 8); "
                    "the single-image baselines keep 2,1,2,2")
    ap.add_argument("--fusion-layers", type=int, default=2, help="the RFNet's self-attention fusion blocks")
    ap.add_argument("--fresh", action="store_true", help="draw new samples for every batch (train.screening_data."
                    "FreshBatches: no sample seen twice) instead of epochs over --n-train + --n-creatives samples")
    ap.add_argument("--renders-share", type=float, default=0.6, help="with --fresh: the renders' share of a batch "
                    "(the rest: the judge's creatives)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine after 100 warm-up steps)")
    ap.add_argument("--init", metavar="MODEL_DIR", help="start the RFNet from this screening model directory's "
                    "weights (rfnet.safetensors; same architecture) instead of random ones; a saved state in "
                    "OUT_state/ still takes precedence (resume)")
    args = ap.parse_args(argv)
    try:
        config = RFNetConfig(fusion_layers=args.fusion_layers,
                             encoder_strides=tuple(int(x) for x in args.encoder_strides.split(",")))
    except ValueError as exc:
        ap.error(str(exc))
    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    states = Path(str(out).rstrip("/") + "_state")
    states.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if args.data:
        from c4u_engine.data.usability_dataset import load_usability
        from c4u_engine.train.screening_data import record_arrays

        train_data, test_data = (record_arrays(load_usability(args.data, s)) for s in ("train", "test"))
    else:
        from c4u_engine.train.screening_data import FreshBatches, union_arrays

        train_data = (FreshBatches(args.seed, args.renders_share) if args.fresh
                      else union_arrays(args.seed, args.n_train, args.n_creatives))
        test_seed = args.seed + 1 if args.test_seed is None else args.test_seed
        if test_seed == args.seed:
            raise SystemExit("--test-seed must differ from --seed: the test set would be training samples")
        test_data = union_arrays(test_seed, args.n_test, args.n_test_creatives)
    torch.manual_seed(args.seed)
    net = RFNet(config)
    if args.init:
        from c4u_engine.screening.model_dir import WEIGHTS_FILE

        weights = Path(args.init) / WEIGHTS_FILE
        if not weights.is_file():
            ap.error(f"--init {args.init}: no {WEIGHTS_FILE} there (a screening model directory)")
        try:
            net.load_state_dict(load_file(str(weights)))  # strict
        except RuntimeError as exc:
            ap.error(f"--init {args.init}: its weights do not fit this architecture ({config}): "
                     f"{str(exc).splitlines()[0]}")
    train(net, train_data, steps=args.steps, seed=args.seed, state=states / "rfnet.safetensors", name="rfnet",
          batch=args.batch, lr=args.lr)
    baselines = []
    for b in range(args.baseline_seeds):
        torch.manual_seed(args.seed + 100 + b)
        base = SingleImageCNN(RFNetConfig())
        train(base, train_data, steps=args.baseline_steps, seed=args.seed + 100 + b,
              state=states / f"baseline_{b}.safetensors", name=f"baseline{b}", batch=args.batch, product_dropout=0.0)
        baselines.append(base)
    full, text_only = predict(net, test_data), predict(net, test_data, has_product=False)
    base_probs = [predict(b, test_data) for b in baselines]
    pos = test_data["label"] == 0
    metrics = {
        "test_set": (f"{len(pos)} held-out synthetic samples (seed {test_seed}: {args.n_test} renders, "
                     f"{args.n_test_creatives} judge's creatives)") if not args.data else args.data,
        "rfnet": classification_report(test_data["label"], full, CLASSES),
        "rfnet_without_product_image": classification_report(test_data["label"], text_only, CLASSES),
        "single_image_baselines": [classification_report(test_data["label"], p, CLASSES) for p in base_probs],
        "rfnet_minus_baseline_ap": [bootstrap_ap_difference(pos, full[:, 0], p[:, 0]) for p in base_probs],
        "rfnet_minus_text_mode_ap": bootstrap_ap_difference(pos, full[:, 0], text_only[:, 0]),
        "rfnet_by_source": {src: classification_report(test_data["label"][m], full[m], CLASSES)
                            for src in sorted(set(test_data.get("source", np.array([])).tolist()))
                            for m in [test_data["source"] == src]},
        "caught_by_difficulty": _by_difficulty(test_data, full[:, 0], 0.5),
        "caught_by_difficulty_without_product_image": _by_difficulty(test_data, text_only[:, 0], 0.5),
        "train": {"samples": (args.steps * args.batch if args.fresh else int(len(train_data["label"]))),
                  "fresh": args.fresh, "init": args.init, "lr": args.lr,
                  **({"renders_share": args.renders_share} if args.fresh else
                     {"renders": args.n_train, "creatives": args.n_creatives}),
                  "steps": args.steps, "batch": args.batch,
                  "baseline_steps": args.baseline_steps, "seed": args.seed, "threads": args.threads,
                  "seconds": round(time.perf_counter() - t_start, 1)},
    }
    from c4u_engine.train.screening_export import export_screening

    export_screening(net, out, metrics={"binary_ap": metrics["rfnet"]["binary"]["ap"],
                                        "binary_ap_without_product_image":
                                            metrics["rfnet_without_product_image"]["binary"]["ap"]})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: metrics[k]["binary"] for k in ("rfnet", "rfnet_without_product_image")}, indent=1))
    print("by source:", {k: v["binary"]["ap"] for k, v in metrics["rfnet_by_source"].items()})
    print("baselines:", [m["binary"]["ap"] for m in metrics["single_image_baselines"]])
    print("diff:", metrics["rfnet_minus_baseline_ap"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
