"""Pair and group sampling, and make_dataset: determinism, balance, thresholds, loadability, speed, CLI."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from c4u_engine.data.__main__ import main
from c4u_engine.data.appeal import appeal_breakdown, click_appeal
from c4u_engine.data.creative_pair import load_groups, load_pairs
from c4u_engine.data.creatives import CreativeSpec
from c4u_engine.data.pairs import MIN_GAP, make_dataset, sample_group, sample_pair
from c4u_engine.errors import InvalidInputError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ds") / "a"
    make_dataset(root, 24, seed=11, size=64, n_groups=3, group_size=3, val_fraction=0.2, test_fraction=0.2)
    return root


def test_same_seed_same_bytes(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "b"
    make_dataset(again, 24, seed=11, size=64, n_groups=3, group_size=3, val_fraction=0.2, test_fraction=0.2)
    assert _files(again) == _files(dataset)
    assert any(name.endswith(".png") for name in _files(dataset))


def test_workers_do_not_change_the_bytes(dataset: Path, tmp_path: Path) -> None:
    parallel = tmp_path / "p"
    make_dataset(parallel, 24, seed=11, size=64, n_groups=3, group_size=3, val_fraction=0.2, test_fraction=0.2,
                 workers=2)
    assert _files(parallel) == _files(dataset)


def test_other_seed_other_data(dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "o"
    make_dataset(other, 24, seed=12, size=64, val_fraction=0.2, test_fraction=0.2)
    assert (other / "train.jsonl").read_bytes() != (dataset / "train.jsonl").read_bytes()


def test_dataset_loads_and_is_consistent(dataset: Path) -> None:
    pairs = load_pairs(dataset)
    assert len(pairs) == 24 and {p.split for p in pairs} <= {"train", "val", "test"}
    for p in pairs:
        spec_a, spec_b = (CreativeSpec.from_dict(p.meta[k]) for k in ("spec_a", "spec_b"))
        appeal_a = click_appeal(spec_a, p.product_title, p.query)
        appeal_b = click_appeal(spec_b, p.product_title, p.query)
        assert p.label == ("A" if appeal_a > appeal_b else "B")
        assert abs(appeal_a - appeal_b) >= MIN_GAP
        assert spec_a.category == spec_b.category and spec_a.product_hue == spec_b.product_hue  # one product
        assert p.reasoning.endswith(f"click {p.label}.")
    groups = load_groups(dataset)
    assert len(groups) == 3
    for g in groups:
        specs = [CreativeSpec.from_dict(d) for d in g.meta["specs"]]
        appeals = [click_appeal(s, g.product_title, g.query) for s in specs]
        assert len(g.images) == 3 and g.best == int(np.argmax(appeals))
    assert (dataset / "manifest.json").is_file()


def test_label_balance_and_gap() -> None:
    rng = np.random.default_rng([5, 5])
    samples = [sample_pair(rng) for _ in range(600)]
    share_a = np.mean([s.label == "A" for s in samples])
    assert 0.44 < share_a < 0.56
    for s in samples:
        assert abs(s.appeal_a - s.appeal_b) >= MIN_GAP
        clean = [sum(appeal_breakdown(x, s.product.title, s.profile.queries).values()) for x in (s.spec_a, s.spec_b)]
        assert (clean[0] > clean[1]) == (s.label == "A")  # the noise never decides a kept pair
    assert len({s.profile.kind for s in samples}) == 4 and len({s.product.category for s in samples}) == 8


def test_group_best_position_is_shuffled() -> None:
    rng = np.random.default_rng(3)
    bests = [sample_group(rng, 4).best for _ in range(80)]
    assert len(set(bests)) == 4
    with pytest.raises(InvalidInputError, match="group_size"):
        sample_group(rng, 1)


def test_generation_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    make_dataset(tmp_path / "fast", 40, seed=0, size=224)
    assert time.perf_counter() - start < 10.0  # ~12 ms per pair on one core; generous for a loaded machine


def test_refuses_non_empty_directory_and_bad_arguments(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not empty"):
        make_dataset(dataset, 2, seed=0, size=64)
    with pytest.raises(InvalidInputError, match="fractions"):
        make_dataset(tmp_path / "x", 2, seed=0, size=64, val_fraction=0.6, test_fraction=0.6)
    with pytest.raises(InvalidInputError, match="workers"):
        make_dataset(tmp_path / "y", 2, seed=0, size=64, workers=0)


def test_cli_make_and_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["make", str(out), "--pairs", "6", "--seed", "1", "--size", "48", "--groups", "1"]) == 0
    assert '"pairs": 6' in capsys.readouterr().out
    assert main(["split", str(out), "--val", "0.5", "--test", "0.5", "--seed", "2"]) == 0
    assert len(load_pairs(out)) == 6 and load_pairs(out, split="train") == []
    assert main(["make", str(out), "--pairs", "1"]) == 2  # not empty: a typed error, exit status 2
    assert "not empty" in capsys.readouterr().err
