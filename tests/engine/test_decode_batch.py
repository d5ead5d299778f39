"""Decoding: stopping rules, row compaction, and rows that join a running batch (continuous batching).

A scripted runner makes every row's next token a function of that row's own real tokens (the ones its mask admits),
so a row routed to another row's KV, a wrong mask after compaction or merging, or a lost row all change the output.
"""

from __future__ import annotations

import numpy as np

from c4u_engine.engine import decode_batch
from c4u_engine.engine.answer import AnswerTokens
from c4u_engine.engine.decode_batch import DecodeRow, reasoning_batch
from c4u_engine.engine.generation import decode
from c4u_engine.engine.sampling import Sampler, SamplingParams

VOCAB = 40
EOS, STOP, CUE = 1, 2, 3  # STOP decodes to "</answer>", CUE to "<answer>"


class ScriptedTokenizer:
    eos_token_ids = (EOS,)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        names = {EOS: "", STOP: "</answer>", CUE: "<answer>"}
        return "".join(names.get(int(i), f"t{int(i)} ") for i in ids)


def script(tokens: np.ndarray) -> int:
    """The next token after a row's real tokens: deterministic, row-specific, stops after a while."""
    n, s = len(tokens), int(tokens.sum())
    if n >= 8 + s % 7:
        return (EOS, STOP)[s % 2]
    if n == 6:
        return CUE
    return 4 + (s * 31 + n * 7) % (VOCAB - 4)


class ScriptedRunner:
    """KV = the token ids themselves [B, slots] (0 = padding)."""

    kernels = None  # the runner contract's declaration: no kernel mode

    def kv_release(self, kv):
        pass

    def kv_for_decode(self, kv, mask):  # the contract's default: the KV as it is
        return kv

    def embed(self, ids, images):
        return np.asarray(ids, np.int64)

    def forward(self, embeds, position_ids, past, attention_mask, logits_index, reserve=0):
        new = embeds if past is None else np.concatenate([past, embeds], axis=1)
        assert attention_mask.shape == new.shape
        logits = np.zeros((new.shape[0], 1, VOCAB), np.float32)
        for b in range(new.shape[0]):
            logits[b, 0, script(new[b][attention_mask[b]])] = 5.0
            logits[b, 0, (7 * b + 5) % VOCAB] += 1.0  # something else to choose when the scripted token is banned
        return logits, new

    def kv_select(self, kv, rows, length=None, reserve=0):
        return kv[list(rows), : (kv.shape[1] if length is None else length)].copy()

    def kv_gather_slots(self, kv, index, reserve=0):
        self.gathers += 1
        return np.take_along_axis(kv, index, axis=1)

    gathers = 0

    stacks = 0

    def kv_stack(self, kvs, length, reserve=0):
        self.stacks += 1
        out = np.zeros((sum(k.shape[0] for k in kvs), length), np.int64)
        at = 0
        for k in kvs:
            out[at : at + k.shape[0], : k.shape[1]] = k
            at += k.shape[0]
        return out


ANSWER = AnswerTokens(ids=(10, 11), fast_prefix="", answer_cue="<answer>", empty_thinking=())


def prompt(seed: int, length: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(4, VOCAB, size=length)


def prefill(runner, prompts: list[np.ndarray]):
    """A right-padded batch prefill: (kv, mask, logits, next positions)."""
    width = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), width), np.int64)
    mask = np.zeros((len(prompts), width), bool)
    for r, p in enumerate(prompts):
        ids[r, : len(p)], mask[r, : len(p)] = p, True
    logits = np.zeros((len(prompts), VOCAB), np.float32)
    for r, p in enumerate(prompts):
        logits[r, script(p)] = 5.0
        logits[r, (7 * r + 5) % VOCAB] += 1.0
    return ids, mask, logits, np.array([len(p) for p in prompts])


def run_alone(p: np.ndarray, max_new: int) -> DecodeRow:
    runner = ScriptedRunner()
    batch = reasoning_batch(runner, ScriptedTokenizer(), ANSWER)
    row = DecodeRow("alone", Sampler(SamplingParams()), max_new)
    batch.join([row], *prefill(runner, [p]))
    while len(batch):
        batch.step()
    return row


def test_rows_joining_a_running_batch_decode_as_they_would_alone():
    runner = ScriptedRunner()
    batch = reasoning_batch(runner, ScriptedTokenizer(), ANSWER)
    prompts = {k: prompt(k, 3 + k) for k in range(7)}
    joins = {0: [0, 1, 2], 2: [3], 3: [4, 5], 5: [6]}  # step -> rows that join before it
    rows = {k: DecodeRow(k, Sampler(SamplingParams()), 30) for k in prompts}
    step = 0
    while step < 60 and (len(batch) or any(s >= step for s in joins)):
        if step in joins:
            ks = joins[step]
            batch.join([rows[k] for k in ks], *prefill(runner, [prompts[k] for k in ks]))
        batch.step()
        step += 1
    assert not len(batch)
    for k, p in prompts.items():
        alone = run_alone(p, 30)
        assert rows[k].tokens == alone.tokens and rows[k].finished_by == alone.finished_by, k
        assert rows[k].finished_by in ("eos", "stop")


def test_a_batch_that_never_drains_repacks_its_slots_and_decodes_as_alone(monkeypatch):
    # A row joins at every step: without re-packing, the batch's slots (every row right-padded to them, one more per
    # step) would grow with the batch's age instead of with its rows' lengths.
    monkeypatch.setattr(decode_batch, "COMPACT_MIN_SLOTS", 4)
    runner = ScriptedRunner()
    batch = reasoning_batch(runner, ScriptedTokenizer(), ANSWER)
    prompts = {k: prompt(100 + k, 3 + k % 5) for k in range(60)}
    rows = {k: DecodeRow(k, Sampler(SamplingParams()), 30) for k in prompts}
    widest = 0
    for step in range(200):
        if step in prompts:
            batch.join([rows[step]], *prefill(runner, [prompts[step]]))
        if not len(batch):
            break
        batch.step()
        if len(batch):
            merged = batch._cohorts[0]
            live = int(merged.mask.sum(axis=1).max())
            assert merged.mask.shape[1] <= decode_batch.COMPACT_SLACK * live + 4 + 1
            widest = max(widest, merged.mask.shape[1])
    assert not len(batch) and batch.compactions > 0 and runner.gathers == batch.compactions
    assert widest < 60  # without re-packing the slots pass 60 (one per step while rows keep joining)
    for k, p in prompts.items():
        alone = run_alone(p, 30)
        assert rows[k].tokens == alone.tokens and rows[k].finished_by == alone.finished_by, k


def test_rows_joining_a_large_batch_gather_apart_and_merge_into_it_a_few_at_a_time(monkeypatch):
    # Merging copies the whole batch KV: rows that join one at a time gather into one joining cohort (its own pass),
    # which merges into the large one when it holds MERGE_FRACTION of its rows (4 of 16) or has run MERGE_AFTER_STEPS.
    monkeypatch.setattr(decode_batch, "MERGE_AFTER_STEPS", 4)
    runner = ScriptedRunner()
    batch = reasoning_batch(runner, ScriptedTokenizer(), ANSWER)
    prompts = {k: prompt(200 + k, 1) for k in range(20)}  # rows that decode 7-13 tokens
    rows = {k: DecodeRow(k, Sampler(SamplingParams()), 40) for k in prompts}
    batch.join([rows[k] for k in range(16)], *prefill(runner, [prompts[k] for k in range(16)]))
    batch.step()
    cohorts, passes = [], []
    for k in range(16, 20):
        batch.join([rows[k]], *prefill(runner, [prompts[k]]))
        _, ran = batch.step()
        cohorts.append([len(c.rows) for c in batch._cohorts])
        passes.append(ran)
    assert cohorts == [[16, 1], [16, 2], [16, 3], [20]] and passes == [17, 18, 19, 20]
    assert runner.stacks == 4  # three joiner stacks (2, 3, 4 rows), one merge of the large cohort
    lone = DecodeRow(99, Sampler(SamplingParams()), 40)  # and a joiner that stays small merges after 4 passes
    batch.join([lone], *prefill(runner, [prompt(299, 1)]))
    sizes = []
    while len(batch):
        batch.step()
        sizes.append(len(batch._cohorts))
    assert max(sizes) <= 2 and sizes[:5] == [2, 2, 2, 2, 1]
    for k, p in prompts.items():
        alone = run_alone(p, 40)
        assert rows[k].tokens == alone.tokens and rows[k].finished_by == alone.finished_by, k
    assert lone.tokens == run_alone(prompt(299, 1), 40).tokens


def test_stop_rules_and_answer_logits_match_the_single_sequence_decoder():
    runner = ScriptedRunner()
    prompts = [prompt(k, 4 + 2 * k) for k in range(5)]
    batch = reasoning_batch(runner, ScriptedTokenizer(), ANSWER)
    rows = [DecodeRow(k, Sampler(SamplingParams()), 30) for k in range(5)]
    batch.join(rows, *prefill(runner, prompts))
    while len(batch):
        batch.step()
    for k, p in enumerate(prompts):
        kv, mask, logits, pos = prefill(runner, [p])
        ref = decode(runner, kv, mask, logits, pos, max_new_tokens=30, sampler=Sampler(SamplingParams()),
                     eos_ids=[EOS], stop=lambda r, g: "</answer>" in ScriptedTokenizer().decode(g[-6:]))
        assert rows[k].tokens == ref.tokens[0] and rows[k].finished_by == ref.finished_by[0]
        assert rows[k].tokens[-1] == (EOS if rows[k].finished_by == "eos" else STOP)
        # P(A) is read from the logits right after the cue, exactly when the row wrote one before its last token
        assert (rows[k].answer_prob is not None) == (CUE in rows[k].tokens[:-1])


def test_max_new_tokens_stops_a_row_and_compacts_the_batch():
    runner = ScriptedRunner()
    batch = reasoning_batch(runner, ScriptedTokenizer(), ANSWER)
    short, long = DecodeRow("short", Sampler(SamplingParams()), 2), DecodeRow("long", Sampler(SamplingParams()), 30)
    batch.join([short, long], *prefill(runner, [prompt(1, 5), prompt(2, 4)]))
    finished, ran = batch.step()
    assert finished == [] and ran == 2
    finished, ran = batch.step()
    assert finished == [short] and short.finished_by == "length" and len(short.tokens) == 2 and ran == 1
    while len(batch):
        batch.step()
    assert long.tokens == run_alone(prompt(2, 4), 30).tokens


def test_dropping_a_row_leaves_the_others_untouched():
    runner = ScriptedRunner()
    batch = reasoning_batch(runner, ScriptedTokenizer(), ANSWER)
    rows = [DecodeRow(("req", k), Sampler(SamplingParams()), 30) for k in range(3)]
    batch.join(rows, *prefill(runner, [prompt(k, 5 + k) for k in range(3)]))
    batch.step()
    dropped = batch.drop(lambda owner: owner == ("req", 1))
    assert dropped == [rows[1]] and len(batch) == 2
    while len(batch):
        batch.step()
    for k in (0, 2):
        assert rows[k].tokens == run_alone(prompt(k, 5 + k), 30).tokens


def test_first_token_suppression_bans_closing_the_thinking():
    runner = ScriptedRunner()
    p = prompt(3, 6)
    banned = script(p)  # the token the script would write first
    answer = AnswerTokens(ids=(10, 11), fast_prefix="", answer_cue="<answer>", empty_thinking=(banned,))
    batch = reasoning_batch(runner, ScriptedTokenizer(), answer)
    row = DecodeRow(0, Sampler(SamplingParams()), 3)
    batch.join([row], *prefill(runner, [p]))
    batch.step()
    assert row.tokens[0] != banned and row.tokens[0] == (7 * 0 + 5) % VOCAB
