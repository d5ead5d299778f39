"""Orders: in which orders a match is judged, and when one order is enough.

The judge has a position bias; showing a match both ways (A/B and B/A) and averaging cancels it (aggregation.py).
    both      every match in both orders, in the same round (the default): 2 comparisons per match
    one       one order only (the strategy's orientation; a coin flip with a seeded tournament): 1 per match
    adaptive  one order first; the second only where the first is not decisive, max(P, 1 - P) < DECISIVE_P (an
              unparsable answer, P = 0.5, never is). The second orders need the first's results, so they are an
              extra round before the strategy's next one.

`both_orders=True/False` is the older spelling of orders="both"/"one" and keeps working; given together, they must
agree (`resolve_orders`).
"""

from __future__ import annotations

from typing import Any

from c4u_engine.errors import InvalidInputError

ORDERS = ("both", "one", "adaptive")

# A first order with max(P, 1 - P) at or above this settles its match in adaptive play. Measured on the built-in
# model, fast mode, 200 groups of 8 made with seed 11 (BENCHMARKS.md reports on another seed; `python
# benchmarks/bench_ranking_strategies.py --tune --seed 11`): of the 8918 of 10908 ordered comparisons at or above
# 0.7, none picked another winner than its pair's two orders together (at 0.65: 3 of 9477; at 0.6: 8 of 9958), and
# the knockout replayed with it chose the both-order knockout's winner in 200 of 200 groups with 40% fewer
# comparisons. A judge with a stronger position bias needs its own measurement (Tournament's decisive_p).
DECISIVE_P = 0.7


def resolve_orders(orders: Any = None, both_orders: Any = None) -> str:
    """The orders to play: `orders` when given, else from `both_orders` (None: "both"). Conflicting values raise."""
    if orders is not None and orders not in ORDERS:
        raise InvalidInputError(f"unknown orders {orders!r}; valid orders: {', '.join(ORDERS)}")
    if both_orders is None:
        return orders or "both"
    implied = "both" if both_orders else "one"
    if orders is not None and orders != implied:
        raise InvalidInputError(f"orders={orders!r} contradicts both_orders={both_orders!r} (which means "
                                f"orders={implied!r}); pass only orders")
    return implied


def check_decisive_p(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 < value <= 1.0:
        raise InvalidInputError(f"decisive_p must be a number in (0.5, 1], got {value!r}")
    return float(value)


def decisive(p_first: float, decisive_p: float) -> bool:
    """True when one order's P(first beats second) settles its match (adaptive play)."""
    return max(p_first, 1.0 - p_first) >= decisive_p
