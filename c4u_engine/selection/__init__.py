"""Selection layer: which comparisons to run (strategies), how to combine them (aggregation), what comes out.

Pure Python: knows nothing of tensors, KV caches or devices. The engine supplies a judge that turns a batch of
ordered pairs into `Comparison`s; `run_tournament` calls it once per round.
"""

from c4u_engine.selection.aggregation import PairOutcome, PairwiseMatrix
from c4u_engine.selection.orders import DECISIVE_P, ORDERS
from c4u_engine.selection.report import render_html, thumbnail_data_uri
from c4u_engine.selection.results import Comparison, Selection
from c4u_engine.selection.strategies import STRATEGIES, Knockout, RoundRobin, Strategy, TopK
from c4u_engine.selection.tournament import Tournament, TournamentOutcome, run_tournament

__all__ = [
    "Comparison",
    "DECISIVE_P",
    "Knockout",
    "ORDERS",
    "PairOutcome",
    "PairwiseMatrix",
    "RoundRobin",
    "STRATEGIES",
    "Selection",
    "Strategy",
    "TopK",
    "Tournament",
    "TournamentOutcome",
    "render_html",
    "run_tournament",
    "thumbnail_data_uri",
]
