"""Selections run by several client threads at once, and the equality concurrency must not break (shared by the
engine's concurrency and lanes tests)."""

from __future__ import annotations

import threading


def same(a, b, tol: float = 1e-5) -> bool:
    """Two selections agree: ranking, every comparison's pair, mode, answer and text, P(A) within `tol`."""
    if a.ranking != b.ranking or len(a.comparisons) != len(b.comparisons):
        return False
    return all((x.first, x.second, x.mode, x.answer, x.raw_text) == (y.first, y.second, y.mode, y.answer, y.raw_text)
               and abs(x.prob_a - y.prob_a) <= tol for x, y in zip(a.comparisons, b.comparisons))


def run_clients(engine, reqs, clients: int, **options) -> list:
    """engine.select(images, profile, **options) for every (images, profile) in reqs, from `clients` threads each
    taking the next request when its last returns; the selections in request order. A client's error fails the
    call."""
    results: list = [None] * len(reqs)
    errors: list = []
    order = iter(range(len(reqs)))
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                k = next(order, None)
            if k is None:
                return
            try:
                results[k] = engine.select(reqs[k][0], reqs[k][1], **options)
            except Exception as exc:  # noqa: BLE001 - surfaced below
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors[0]
    return results
