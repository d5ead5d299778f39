"""`c4u batch --ray`: the same selections on Ray Data, for catalogues that outgrow one machine.

The JSONL is read with Ray Data (read_text: one row per line, split across the cluster), each batch of lines goes
to one of `actors` actors that each hold one Engine (map_batches; the actor parses the lines exactly as the local run
does and runs them through Engine.select_many), and the driver appends the records to the same results JSONL as the
local run writes (same records, same --resume). On a cluster (`--address HEAD:6379`), every node must see the image
paths (shared storage: relative paths resolve against the JSONL's directory, so mount it at the same path
everywhere). Lines need an "id" here: a line number means nothing once Ray has split the file.

A local Ray instance (no --address) listens on 127.0.0.1 only, as `c4u serve --ray` does (serving/ray_serve.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from c4u_engine.batch.items_file import count_lines, item_from_line
from c4u_engine.batch.results_file import ResultsFile, result_record
from c4u_engine.batch.run import BatchSummary, _progress
from c4u_engine.errors import BackendUnavailableError, InvalidInputError

LINES_PER_CALL = 64  # lines handed to an actor at once: enough for its engine's select_many window


class SelectorActor:
    """One Engine; turns a batch of JSONL lines into result records (JSON text), in line order."""

    def __init__(self, engine_args: Mapping[str, Any], options: Mapping[str, Any], root: str,
                 done_ids: frozenset[str], max_in_flight: int | None) -> None:
        from c4u_engine.api import Engine
        from c4u_engine.builtin import builtin_model_dir

        args = dict(engine_args)
        self.engine = Engine(args.pop("model") or builtin_model_dir(), **args)
        self.options, self.root, self.done = dict(options), Path(root), done_ids
        self.max_in_flight = max_in_flight

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list]:
        items, skipped = [], 0
        for line in batch["text"]:
            line = str(line)
            if not line.strip():
                continue
            item = item_from_line(line, self.root, f"line {line[:80]!r}", None)
            if item.id in self.done:
                skipped += 1
                continue
            items.append(item)
        records = [json.dumps(result_record(r), ensure_ascii=False)
                   for r in self.engine.select_many(items, max_in_flight=self.max_in_flight, **self.options)]
        # one output row per input row keeps Ray's batch accounting simple: skipped lines give empty records
        return {"record": records + [""] * (len(batch["text"]) - len(records)),
                "skipped": [skipped] + [0] * (len(batch["text"]) - 1)}


def run_on_ray(source: str | Path, out: str | Path, *, options: Mapping[str, Any], resume: bool = False,
               actors: int = 1, address: str | None = None, listen_all: bool = False, model: str | None = None,
               backend: str = "auto", device: str = "cpu", precision: str | None = None,
               max_in_flight: int | None = None, progress: bool | None = None, log=sys.stderr) -> BatchSummary:
    """Run the batch on Ray Data (`actors` actors, one Engine each); records appended to `out` as run_batch does."""
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise InvalidInputError(f"--actors must be a positive int, got {actors!r}")
    source = Path(source).absolute()
    if not source.is_file():
        raise InvalidInputError(f"{source}: no such groups JSONL file")
    ray = _start_ray(address, listen_all)
    results = ResultsFile(out, resume=resume)
    summary = BatchSummary()
    cpus = 1 if address else max(1, (os.cpu_count() or 1) // actors)  # a local machine shared by its actors
    threads = str(cpus)
    engine_args = {"model": model, "backend": backend, "device": device, "precision": precision, "lanes": 1}
    # Reading lines is light I/O: its tasks ask for no CPU, or actors holding every CPU would leave none to read.
    ds = ray.data.read_text(str(source), num_cpus=0).map_batches(
        SelectorActor, batch_size=LINES_PER_CALL, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus,
        fn_constructor_kwargs={"engine_args": engine_args, "options": dict(options), "root": str(source.parent),
                               "done_ids": frozenset(results.done_ids), "max_in_flight": max_in_flight},
        runtime_env={"env_vars": {"C4U_ORT_THREADS": threads, "OMP_NUM_THREADS": threads}})
    t0 = time.perf_counter()
    try:
        with _progress(count_lines(source), len(results.done_ids), progress) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                summary.skipped += int(sum(batch["skipped"]))
                for text in batch["record"]:
                    if not text:
                        continue
                    record = json.loads(text)
                    results.write(record)
                    summary.failed += "error" in record
                    summary.done += "error" not in record
                    bar.update(1)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.seconds = time.perf_counter() - t0
        results.close()
        if address is None:
            ray.shutdown()
    return summary


def _start_ray(address: str | None, listen_all: bool):
    if address is None and not listen_all:
        from c4u_engine.serving.ray_serve import keep_ray_local

        keep_ray_local()
    try:
        import ray
        import ray.data  # noqa: F401 - the data extra
    except ImportError as exc:
        raise BackendUnavailableError(f"--ray needs Ray Data: pip install 'c4u_engine[ray-data]' ({exc})") from exc
    ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts selections, not blocks
    return ray
