"""schedule() and postprocess() as plain functions of plain values: no model, no thread.

A fake session (token counts only), fake prompt spans (a system turn, a prefix per profile, fixed image spans) and a
real KV store holding stand-in KV objects: what the scheduler decides, and what it does with a step's outputs."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import numpy as np

from c4u_engine.comparison import Comparison
from c4u_engine.engine.chain import IMAGE_A, PREFIX, SYSTEM, PromptChain
from c4u_engine.engine.config import EngineConfig
from c4u_engine.engine.kv_store import KVStore
from c4u_engine.engine.request import Request
from c4u_engine.engine.sampling import Sampler, SamplingParams
from c4u_engine.engine.scheduler import Scheduler
from c4u_engine.engine.spans import ComparisonLayout
from c4u_engine.engine.step import PREFIX_SLOT, StepOutputs
from c4u_engine.runners.base import RunnerCapabilities
from c4u_engine.selection.policy import SelectionPolicy

IMAGE_TOKENS = 4  # every fake image: 4 pads between its start and end tokens
GRID = (1, 4, 4)


class FakeSpans:
    """A system turn of 6 tokens, a profile of `profile_len` tokens, image spans of 6, a tail of 5 after image B."""

    def __init__(self, profile: int, profile_len: int = 4, scope: str = "") -> None:
        self.scope = scope
        self.system_ids = np.arange(100, 106)
        self.prefix_ids = np.concatenate([self.system_ids, np.full(profile_len, 200 + profile)])

    def prefix_a(self, grid):
        ids = np.concatenate([self.prefix_ids, [1], np.full(IMAGE_TOKENS, 2), [3]])
        return ids, np.tile(np.arange(len(ids)), (3, 1))

    def layout(self, grid_a, grid_b, mode):
        first, _ = self.prefix_a(grid_a)
        ids = np.concatenate([first, [1], np.full(IMAGE_TOKENS, 2), [3], np.full(5, 7 if mode == "fast" else 8)])
        return ComparisonLayout(ids, np.tile(np.arange(len(ids)), (3, 1)), len(self.prefix_ids), len(first))


class FakeKV:
    nbytes = 10


def _scheduler(**config) -> Scheduler:
    runner = SimpleNamespace(kv_nbytes=lambda kv: kv.nbytes, kernels=None, capabilities=RunnerCapabilities(
        False, False, False, None, False, None))
    tokenizer = SimpleNamespace(eos_token_ids=[0], im_end_id=0, decode=lambda ids, **_: "")
    session = SimpleNamespace(runner=runner, tokenizer=tokenizer, image_token_count=lambda grid: IMAGE_TOKENS)
    answer = SimpleNamespace(ids=(32, 33), empty_thinking=(), answer_cue="<answer>")
    return Scheduler(session, KVStore(10_000, runner.kv_nbytes), answer, "<think>", EngineConfig(**config))


def _request(rid: int, spans: FakeSpans, hashes: list[str], mode: str = "fast", strategy: str = "round_robin"):
    plan = SelectionPolicy(len(hashes), strategy, True, mode)
    pairs, round_mode = plan.pending_round()
    first = len(spans.prefix_ids) + len({a for a, _ in pairs}) * 6 + len(pairs) * 11
    return Request(id=rid, spans=spans, chain=PromptChain(spans, hashes, [GRID] * len(hashes)),
                   images=[SimpleNamespace(content_hash=h) for h in hashes], grids=[GRID] * len(hashes),
                   pixels=[None] * len(hashes), plan=plan, max_new_tokens=16, sampler=Sampler(SamplingParams()),
                   use_cache=True, deadline=None, future=Future(), kv_slots_estimate=1, first_step_tokens=first)


def test_schedule_plans_every_chain_level_once_and_shares_what_requests_have_in_common():
    s = _scheduler()
    spans = FakeSpans(profile=1)
    a, b = _request(1, spans, ["x", "y", "z"]), _request(2, spans, ["y", "z"])  # same profile, shared images
    s.active += [a, b]
    batch = s.schedule()
    assert batch.requests == [a, b] and batch.encode == [(a, 0), (a, 1), (a, 2), (b, 0), (b, 1)]
    system, prefix, image_a = batch.links
    assert [w.link.level for w in system] == [SYSTEM] and system[0].holders == [] and system[0].requests == [a]
    assert len(prefix) == 1 and prefix[0].link.level == PREFIX and prefix[0].link.parent == system[0].link.key
    assert prefix[0].holders == [(a, PREFIX_SLOT), (b, PREFIX_SLOT)]  # one entry for both: the same prefix
    # a's images A are x, y, z; b's are y, z (other candidate ids, the same content and prefix): computed once
    assert [w.link.image for w in image_a] == [0, 1, 2] and all(w.link.level == IMAGE_A for w in image_a)
    assert [w.holders for w in image_a] == [[(a, 0)], [(a, 1), (b, 0)], [(a, 2), (b, 1)]]
    assert [(r.id, pairs, mode) for r, pairs, mode in batch.starts] == [
        (1, a.plan.pending_round()[0], "fast"), (2, [(0, 1), (1, 0)], "fast")]
    assert [(row.request.id, row.index, row.pair) for row in batch.rows["fast"]] == \
        [(1, i, p) for i, p in enumerate(a.plan.pending_round()[0])] + [(2, 0, (0, 1)), (2, 1, (1, 0))]
    assert batch.rows["reason"] == [] and batch.hits == [] and batch.parents == []


def test_schedule_takes_entries_from_the_store_pinned_and_computes_only_what_is_missing():
    s = _scheduler()
    spans = FakeSpans(profile=1)
    r = _request(1, spans, ["x", "y"])
    system = s.store.insert(r.chain.system.key, FakeKV(), np.ones(6, bool), 5)
    a_x = s.store.insert(r.chain.image_a(0).key, FakeKV(), np.ones(16, bool), 15)
    s.store.release(system)
    s.store.release(a_x)
    s.active.append(r)
    batch = s.schedule()
    assert batch.parents == [(r, system)] and batch.hits == [((r, 0), a_x)]
    assert system.refs == 1 and a_x.refs == 1  # pinned for the step / for the request
    assert [len(level) for level in batch.links] == [0, 1, 1] and batch.links[IMAGE_A][0].link.image == 1


def test_schedule_keeps_the_step_budget_oldest_first_and_the_decode_room():
    spans = FakeSpans(profile=1)
    old, young = _request(1, spans, ["x", "y", "z"]), _request(2, FakeSpans(2), ["x", "y"])
    s = _scheduler(max_step_tokens=old.first_step_tokens + 3 * IMAGE_TOKENS)  # room for the oldest only
    s.active += [old, young]
    assert s.schedule().requests == [old]
    s = _scheduler(max_batch_rows=4)
    reason = _request(3, spans, ["x", "y", "z"], mode="reason")  # 6 rows in its first round
    s.active.append(reason)
    batch = s.schedule()
    assert [row.index for row in batch.rows["reason"]] == [0, 1, 2, 3]  # the decode batch holds 4 rows at most


def _computed(s: Scheduler, batch) -> StepOutputs:
    """What run() would give back for `batch` up to the comparisons: every image embedded, every link computed
    (inserted into the store, the step holding one pin on each)."""
    out = StepOutputs()
    for r, i in batch.encode:
        out.embeds[(r.id, i)] = (f"embeds-{r.images[i].content_hash}", False)
    for level in batch.links:
        for work in level:
            entry = s.store.insert(work.link.key, FakeKV(), np.ones(len(work.link.new.ids), bool),
                                   work.link.last_position)
            out.entries[work.link.key] = entry
            out.pins.append(entry)
    return out


def test_postprocess_hands_out_entries_records_answers_and_advances_the_plan():
    s = _scheduler()
    spans = FakeSpans(profile=1)
    a, b = _request(1, spans, ["x", "y"]), _request(2, spans, ["x", "y"])
    s.active += [a, b]
    batch = s.schedule()
    out = _computed(s, batch)
    for row in batch.rows["fast"]:
        out.prefilled.append(row)
        out.comparisons[(row.request.id, row.index)] = Comparison(*row.pair, "A", 0.9, mode="fast")
    s.postprocess(batch, out)
    # round robin of two: one round of both orders, answered "A" both times: a draw, and both requests finish
    assert a.future.done() and b.future.done() and s.active == []
    sel = a.future.result()
    assert len(sel.comparisons) == 2 and {(c.first, c.second) for c in sel.comparisons} == {(0, 1), (1, 0)}
    assert sel.stats["scheduler_rounds"] == 1 and sel.stats["images_encoded"] == 2
    assert s.store.pinned_bytes == 0 and len(s.store) == 4  # system, prefix, two images A: kept, unpinned


def test_postprocess_fails_only_the_failed_request_and_releases_its_entries():
    s = _scheduler()
    a, b = _request(1, FakeSpans(1), ["x", "y"]), _request(2, FakeSpans(2), ["x", "y"])
    s.active += [a, b]
    batch = s.schedule()
    out = _computed(s, batch)
    out.failures[a] = RuntimeError("boom")
    s.postprocess(batch, out)
    assert a.future.done() and "boom" in str(a.future.exception())
    assert s.active == [b] and b.prefix is not None and set(b.a_entries) == {0, 1} and a.prefix is None
    assert b.round_pairs == [(0, 1), (1, 0)] and b.waiting_rows == [0, 1]  # its rows come next step
    held = {id(e) for e in b.held_entries()}
    assert s.store.pinned_bytes == sum(e.nbytes for e in s.store._entries.values() if id(e) in held)


def test_a_plan_that_cannot_say_its_round_fails_only_its_request():
    s = _scheduler()
    good, bad = _request(1, FakeSpans(1), ["x", "y"]), _request(2, FakeSpans(2), ["x", "y"])

    def broken():
        raise RuntimeError("plan broke")

    bad.plan.pending_round = broken
    s.active += [bad, good]
    batch = s.schedule()
    assert list(batch.failures) == [bad] and [r for r, *_ in batch.starts] == [good]
    assert all(h[0] is good for level in batch.links for w in level for h in w.holders)
    s.postprocess(batch, StepOutputs())
    assert "plan broke" in str(bad.future.exception()) and s.active == [good]


def test_a_step_that_raises_gives_back_the_pins_it_took():
    s = _scheduler()
    r = _request(1, FakeSpans(1), ["x", "y"])
    for link in (r.chain.system, r.chain.image_a(0)):
        s.store.release(s.store.insert(link.key, FakeKV(), np.ones(len(link.new.ids), bool), link.last_position))
    s.active.append(r)

    def failing_run(batch):
        assert s.store.pinned_bytes == 20  # the system turn (a parent) and image A x (a hit), pinned by schedule()
        raise RuntimeError("bug in run")

    s.run = failing_run
    try:
        s.step()
    except RuntimeError as exc:
        s.recover(exc)
    assert "bug in run" in str(r.future.exception()) and s.active == []
    assert s.store.pinned_bytes == 0 and all(e.refs == 0 for e in s.store._entries.values())
