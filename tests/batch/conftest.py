"""The batch tests' fixtures: made datasets (groups.jsonl + images, 112 px, 4 per group), their groups as select()
arguments, the built-in engine, and a check that two selections (objects or JSON records) agree."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from c4u_engine.api import Engine, default_engine
from c4u_engine.data.pairs import make_dataset

PROB_TOL = 1e-5


@dataclass(frozen=True)
class Group:
    """One line of a made groups.jsonl: its id, its images as absolute paths and its profile."""

    id: str
    images: list[str]
    profile: dict[str, Any]


@dataclass(frozen=True)
class Groups:
    path: Path  # the groups.jsonl
    groups: list[Group]

    @property
    def ids(self) -> list[str]:
        return [g.id for g in self.groups]


@pytest.fixture(scope="session")
def made_groups(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Groups]:
    """made_groups(n, seed=0) -> Groups of a dataset made by make_dataset (memoized per session)."""
    made: dict[tuple[int, int], Groups] = {}

    def make(n: int, seed: int = 0) -> Groups:
        if (n, seed) not in made:
            out = tmp_path_factory.mktemp(f"groups{n}_{seed}")
            make_dataset(out, 0, seed, 112, n_groups=n, group_size=4)
            groups = []
            for line in (out / "groups.jsonl").read_text(encoding="utf-8").splitlines():
                obj = json.loads(line)
                groups.append(Group(obj["id"], [str(out / p) for p in obj["images"]],
                                    {"title": obj["product_title"], "queries": obj["query"]}))
            assert len(groups) == n and len({g.id for g in groups}) == n
            made[(n, seed)] = Groups(out / "groups.jsonl", groups)
        return made[(n, seed)]

    return make


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The built-in model's shared engine (what `c4u batch` runs on without --model)."""
    return default_engine()


def _plain(selection: Any) -> dict[str, Any]:
    return selection if isinstance(selection, dict) else selection.to_dict()


def assert_same_selection(got: Any, want: Any) -> None:
    """Same winner, ranking and comparisons (pair by pair, prob_a within PROB_TOL); Selection or its JSON form."""
    got, want = _plain(got), _plain(want)
    assert got["winner"] == want["winner"]
    assert got["ranking"] == want["ranking"]
    assert len(got["comparisons"]) == len(want["comparisons"]) > 0
    for a, b in zip(got["comparisons"], want["comparisons"]):
        assert (a["first"], a["second"], a["answer"]) == (b["first"], b["second"], b["answer"])
        assert abs(a["prob_a"] - b["prob_a"]) <= PROB_TOL, (a, b)


@pytest.fixture(scope="session")
def same_selection() -> Callable[[Any, Any], None]:
    """assert_same_selection as a fixture (test modules do not import conftest: see tests/http_server.py)."""
    return assert_same_selection
