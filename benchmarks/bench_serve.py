"""Load generator for the HTTP API, against 127.0.0.1 only, bounded in requests and seconds.

    python benchmarks/bench_serve.py --concurrency 1 8 32 --requests 96                # starts `c4u serve`
    python benchmarks/bench_serve.py --ray --replicas 2 --concurrency 1 8 32           # starts Ray Serve
    python benchmarks/bench_serve.py --rate 20 40 --duration 10                        # open loop too

Closed loop: C clients, each sending its next request when the last one returns, until --requests are done.
Open loop: requests sent at a fixed rate (Poisson arrivals) for --duration seconds, whatever the answers.
Workload: selections of --candidates synthetic creatives (112x112, knockout, fast), each for its own product and
user, as base64 JSON; every run gets requests of its own (nothing cached by an earlier run). The same requests run
in-process (Engine.select_async at the same concurrency) for comparison. Reports throughput, p50/p95/p99 latency and
errors by status; --out writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_concurrency import model_dir, workload  # noqa: E402
from report import machine, markdown_table  # noqa: E402

HOST = "127.0.0.1"


def png_b64(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def start_server(args, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "c4u_engine.cli", "serve", "--model", str(model_dir(args.model)), "--host", HOST,
           "--port", str(port), "--backend", args.backend]
    if args.ray:
        cmd += ["--ray", "--replicas", str(args.replicas)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    import httpx

    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError("the server did not become ready in time")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def summary(latencies: list[float], statuses: Counter, seconds: float) -> dict:
    ok = [t for t in latencies if t is not None]
    pct = (lambda q: float(np.percentile(ok, q))) if ok else (lambda q: float("nan"))
    return {"requests": sum(statuses.values()), "seconds": seconds, "throughput": statuses.get(200, 0) / seconds,
            "p50": pct(50), "p95": pct(95), "p99": pct(99), "statuses": dict(sorted(statuses.items()))}


async def closed_loop(send, bodies: list, concurrency: int, time_limit: float) -> dict:
    queue = list(range(len(bodies)))
    latencies, statuses = [], Counter()
    t_end = time.perf_counter() + time_limit

    async def client():
        while queue and time.perf_counter() < t_end:
            k = queue.pop()
            t0 = time.perf_counter()
            status = await send(bodies[k])
            statuses[status] += 1
            latencies.append(time.perf_counter() - t0 if status == 200 else None)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return summary(latencies, statuses, time.perf_counter() - t0)


async def open_loop(send, bodies: list, rate: float, duration: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    latencies, statuses, tasks = [], Counter(), []

    async def one(body):
        t0 = time.perf_counter()
        status = await send(body)
        statuses[status] += 1
        latencies.append(time.perf_counter() - t0 if status == 200 else None)

    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < duration:
        tasks.append(asyncio.ensure_future(one(bodies[k % len(bodies)])))
        k += 1
        await asyncio.sleep(rng.exponential(1.0 / rate))
    await asyncio.gather(*tasks)
    return summary(latencies, statuses, time.perf_counter() - t0)


def http_sender(client, url: str):
    import httpx

    async def send(body) -> int:
        try:
            return (await client.post(url, json=body)).status_code
        except httpx.TransportError:
            return 0  # connection refused / reset: counted, never retried

    return send


def in_process_sender(engine):
    async def send(body) -> int:
        images = [base64.b64decode(s) for s in body["images"]]
        try:
            await engine.select_async(images, body["profile"], mode=body["mode"], strategy=body["strategy"])
            return 200
        except Exception as exc:  # noqa: BLE001 - the HTTP status it would map to
            from c4u_engine.serving.schema import error_status

            return error_status(exc)

    return send


async def run(args) -> list[dict]:
    import httpx

    def bodies(seed: int, n: int) -> list[dict]:
        return [{"images": [png_b64(im) for im in images], "profile": profile, "mode": "fast", "strategy": "knockout"}
                for images, profile in workload(n, args.candidates, args.size, seed)]

    # Fresh requests for every run (seeded per run): a run must not find the previous run's images and prefixes in
    # the caches. The in-process comparison replays the same runs in the same order on its own engine.
    warm = bodies(args.seed + 999, max(args.concurrency))
    closed_sets = {c: bodies(args.seed + k, args.requests) for k, c in enumerate(args.concurrency)}
    open_sets = {r: bodies(args.seed + 100 + k, max(1, int(r * args.duration * 1.5))) for k, r in enumerate(args.rate)}
    rows = []
    port = args.port
    proc = start_server(args, port)
    try:
        limits = httpx.Limits(max_connections=max([*args.concurrency, 64]))
        async with httpx.AsyncClient(timeout=args.request_timeout, limits=limits) as client:
            send = http_sender(client, f"http://{HOST}:{port}/v1/select")
            await closed_loop(send, warm, max(args.concurrency), 60)  # warm-up
            for c in args.concurrency:
                rows.append({"target": "http", "loop": "closed", "concurrency": c,
                             **await closed_loop(send, closed_sets[c], c, args.time_limit)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            for rate in args.rate:
                rows.append({"target": "http", "loop": "open", "rate": rate,
                             **await open_loop(send, open_sets[rate], rate, args.duration)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        stop_server(proc)
    if args.in_process:
        from c4u_engine.api import Engine

        engine = Engine(model_dir(args.model), backend=args.backend)
        send = in_process_sender(engine)
        await closed_loop(send, warm, max(args.concurrency), 60)
        for c in args.concurrency:
            rows.append({"target": "in-process", "loop": "closed", "concurrency": c,
                         **await closed_loop(send, closed_sets[c], c, args.time_limit)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        engine.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin", help="builtin | workload | tiny | a checkpoint directory")
    p.add_argument("--backend", default="auto")
    p.add_argument("--ray", action="store_true", help="serve with Ray Serve")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=96, help="requests per closed-loop run (at most)")
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds per closed-loop run (at most)")
    p.add_argument("--rate", type=float, nargs="*", default=[], help="open-loop request rates (per second)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per open-loop run")
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--request-timeout", type=float, default=120.0)
    p.add_argument("--start-timeout", type=float, default=180.0)
    p.add_argument("--no-in-process", dest="in_process", action="store_false")
    p.add_argument("--out")
    args = p.parse_args()
    rows = asyncio.run(run(args))
    target = f"Ray Serve, {args.replicas} replica(s)" if args.ray else "c4u serve (uvicorn, one Engine)"
    print(f"\nmachine: {machine()}\nserver: {target}; model {args.model}; {args.candidates} candidates, knockout, "
          f"fast, {args.size}x{args.size}\n")
    print(markdown_table(
        ["target", "loop", "concurrency / rate", "requests", "seconds", "selections/s", "p50 s", "p95 s", "p99 s",
         "statuses"],
        [[r["target"], r["loop"], r.get("concurrency", f"{r.get('rate')}/s"), r["requests"], f"{r['seconds']:.2f}",
          f"{r['throughput']:.2f}", f"{r['p50']:.3f}", f"{r['p95']:.3f}", f"{r['p99']:.3f}", r["statuses"]]
         for r in rows]))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "server": target, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
