"""top_k and orders through Engine.select on the built-in model (its P(A) are decisive often enough for adaptive
orders to skip some second orders and play others)."""

from __future__ import annotations

import pytest

from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine
from c4u_engine.builtin import builtin_model_dir
from c4u_engine.errors import InvalidInputError
from c4u_engine.selection import DECISIVE_P

PROFILE = {"title": "Waterproof trail running shoes", "queries": ["running shoes sale", "trail shoes"]}


@pytest.fixture(scope="module")
def engine():
    eng = Engine(builtin_model_dir())
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def images():
    return [make_test_image(112, 112, seed=s) for s in range(1, 8)]


def test_top_k_ranks_its_first_k_as_a_round_robin_of_them_would(engine, images):
    sel = engine.select(images, PROFILE, top_k=2)
    assert sel.stats["top_k"] == 2 and sel.stats["strategy"] == "knockout"
    # 7 candidates: a knockout until 2k = 4 remain (3 matches), then the 4 finalists' round robin (6), both orders
    assert len(sel.comparisons) == sel.stats["comparisons"] == 2 * (3 + 6) and sel.stats["comparisons_saved"] == 0
    finalists = sorted(sel.ranking[:4])
    alone = engine.select([images[i] for i in finalists], PROFILE, strategy="round_robin")
    assert sel.ranking[:4] == [finalists[i] for i in alone.ranking]
    assert sorted(sel.ranking) == list(range(7))
    full = engine.select(images, PROFILE, strategy="round_robin", top_k=3)  # a round robin already ranks everyone
    assert full.stats["top_k"] == 3 and len(full.comparisons) == 42
    assert engine.select(images[:2], PROFILE, top_k=5).stats["top_k"] == 2  # clamped to the candidates


def test_adaptive_orders_play_a_second_order_only_after_an_undecided_first(engine, images):
    sel = engine.select(images, PROFILE, orders="adaptive")
    assert sel.stats["orders"] == "adaptive"
    first: dict[frozenset, float] = {}
    judged: dict[frozenset, int] = {}
    for c in sel.comparisons:  # in round order: a pair's first comparison is its first order
        key = frozenset((c.first, c.second))
        first.setdefault(key, c.prob_a)
        judged[key] = judged.get(key, 0) + 1
    decisive = {k for k, p in first.items() if max(p, 1 - p) >= DECISIVE_P}
    assert decisive and decisive != set(first)  # these images have both kinds of match
    assert all(judged[k] == (1 if k in decisive else 2) for k in judged)
    assert len(judged) == 6 and sel.stats["comparisons_saved"] == len(decisive)
    assert sel.stats["comparisons"] == 12 - len(decisive)
    both = engine.select(images, PROFILE, orders="both")
    assert both.winner == sel.winner and both.stats["comparisons_saved"] == 0


def test_both_orders_keeps_working_and_conflicts_are_invalid_input(engine, images):
    one = engine.select(images[:4], PROFILE, both_orders=False)
    assert one.stats["orders"] == "one" and one.stats["both_orders"] is False
    same = engine.select(images[:4], PROFILE, orders="one")
    assert [(c.first, c.second) for c in same.comparisons] == [(c.first, c.second) for c in one.comparisons]
    assert engine.select(images[:4], PROFILE, both_orders=True, orders="both").stats["comparisons_saved"] == 0
    for bad in (dict(both_orders=True, orders="adaptive"), dict(orders="sometimes"), dict(top_k=0),
                dict(top_k=True), dict(top_k="3"), dict(top_k=2.0)):
        with pytest.raises(InvalidInputError):
            engine.submit(images[:3], PROFILE, **bad)


def test_hybrid_with_top_k_and_adaptive_orders_reasons_about_the_deciding_pairs(engine, images):
    sel = engine.select(images[:5], PROFILE, mode="hybrid", top_k=2, orders="adaptive", max_new_tokens=32)
    reasoned = [c for c in sel.comparisons if c.mode == "reason"]
    assert reasoned and sorted((c.first, c.second) for c in reasoned) == sorted(sel.deciding_pairs)
    assert all(sel.winner in (c.first, c.second) for c in reasoned)
    fast = {(c.first, c.second) for c in sel.comparisons if c.mode == "fast"}
    assert set(sel.deciding_pairs) <= fast  # only orders that the fast tournament played
    assert sel.stats["top_k"] == 2 and sel.stats["hybrid_reasoned"] == len(reasoned)
