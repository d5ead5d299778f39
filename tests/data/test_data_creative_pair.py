"""The CreativePair JSONL format: round trip, directory layouts, and a battery of malformed records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from c4u_engine.data.creative_pair import GroupRecord, PairRecord, load_groups, load_pairs, write_groups, write_pairs
from c4u_engine.data.splits import assign_split, split_dataset
from c4u_engine.errors import InvalidInputError


def _dataset(root: Path, n: int = 4) -> list[PairRecord]:
    (root / "img").mkdir(parents=True)
    records = []
    for i in range(n):
        a, b = root / "img" / f"{i}_a.png", root / "img" / f"{i}_b.png"
        a.write_bytes(b"png")
        b.write_bytes(b"png")
        records.append(PairRecord(a, b, f"Title {i}", ("cheap bag", "bag sale"), "AB"[i % 2], f"Reason {i}.",
                                  f"id{i}", None, {"k": i} if i % 2 else None))
    return records


def _good() -> dict:
    return {"image_a": "img/0_a.png", "image_b": "img/0_b.png", "product_title": "T", "query": ["q"],
            "label": "A", "reasoning": "r"}


def _write_lines(path: Path, objs: list) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs), encoding="utf-8")
    return path


def test_pairs_round_trip(tmp_path: Path) -> None:
    records = _dataset(tmp_path)
    write_pairs(tmp_path / "pairs.jsonl", records)
    loaded = load_pairs(tmp_path)
    assert loaded == records
    assert loaded[1].source == f"{tmp_path / 'pairs.jsonl'}:2"
    line = json.loads((tmp_path / "pairs.jsonl").read_text().splitlines()[0])
    assert line["image_a"] == "img/0_a.png" and line["query"] == ["cheap bag", "bag sale"]


def test_groups_round_trip(tmp_path: Path) -> None:
    pairs = _dataset(tmp_path)
    groups = [GroupRecord((pairs[0].image_a, pairs[0].image_b, pairs[1].image_a), "T", ("q",), 2, "g0", "test")]
    write_groups(tmp_path / "groups.jsonl", groups)
    assert load_groups(tmp_path) == groups
    assert load_groups(tmp_path, split="test") == groups and load_groups(tmp_path, split="train") == []


def test_splits_and_resplit(tmp_path: Path) -> None:
    records = _dataset(tmp_path, n=40)
    write_pairs(tmp_path / "pairs.jsonl", records)
    counts = split_dataset(tmp_path, val_fraction=0.25, test_fraction=0.25, seed=1)
    assert sum(counts.values()) == 40 and min(counts.values()) > 0
    train = load_pairs(tmp_path, split="train")
    assert len(train) == counts["train"] and {r.split for r in train} == {"train"}
    assert sorted(r.id for r in load_pairs(tmp_path)) == sorted(r.id for r in records)  # the union of the splits
    assert load_pairs(tmp_path / "val.jsonl", split="val") == load_pairs(tmp_path, split="val")
    assert split_dataset(tmp_path, 0.25, 0.25, seed=1) == counts  # re-splitting the split files is stable
    assert assign_split("x", 0, 0.0, 0.0) == "train" and assign_split("x", 0, 0.0, 1.0) == "test"


def test_single_query_string_is_accepted(tmp_path: Path) -> None:
    _dataset(tmp_path, 1)
    (record,) = load_pairs(_write_lines(tmp_path / "p.jsonl", [{**_good(), "query": "cheap bag", "id": 7}]))
    assert record.query == ("cheap bag",) and record.id == "7" and record.reasoning == "r"


@pytest.mark.parametrize("mutate,message", [
    (lambda o: o.pop("label"), "field 'label'"),
    (lambda o: o.update(label="C"), "field 'label': expected 'A' or 'B'"),
    (lambda o: o.update(label="a"), "field 'label'"),
    (lambda o: o.pop("product_title"), "field 'product_title' is missing"),
    (lambda o: o.update(product_title="  "), "field 'product_title' is empty"),
    (lambda o: o.update(product_title=3), "field 'product_title': expected str"),
    (lambda o: o.update(query=[]), "field 'query': expected at least one"),
    (lambda o: o.update(query=["ok", ""]), r"field 'query'\[1\]"),
    (lambda o: o.update(query={"q": 1}), "field 'query': expected list or str"),
    (lambda o: o.update(image_a="/etc/passwd"), "field 'image_a': absolute path"),
    (lambda o: o.update(image_b="../outside.png"), "field 'image_b': path '../outside.png' escapes"),
    (lambda o: o.update(image_b="img/../../x.png"), "escapes"),
    (lambda o: o.update(image_a="img/missing.png"), "does not exist"),
    (lambda o: o.update(image_a=5), "field 'image_a'"),
    (lambda o: o.update(reasoning=["x"]), "field 'reasoning': expected str"),
    (lambda o: o.update(id=True), "field 'id'"),
    (lambda o: o.update(meta=[1]), "field 'meta': expected dict"),
])
def test_pair_errors_name_file_line_and_field(tmp_path: Path, mutate, message: str) -> None:
    _dataset(tmp_path, 1)
    bad = _good()
    mutate(bad)
    path = _write_lines(tmp_path / "p.jsonl", [_good(), "", bad])
    with pytest.raises(InvalidInputError, match=message) as info:
        load_pairs(path)
    assert f"{path}:3:" in str(info.value)


def test_structural_errors(tmp_path: Path) -> None:
    _dataset(tmp_path, 1)
    with pytest.raises(InvalidInputError, match=r"p\.jsonl:1: not valid JSON"):
        load_pairs(_write_lines(tmp_path / "p.jsonl", ["{oops"]))
    with pytest.raises(InvalidInputError, match="expected a JSON object, got list"):
        load_pairs(_write_lines(tmp_path / "p.jsonl", ["[1, 2]"]))
    with pytest.raises(InvalidInputError, match=r"p\.jsonl:2: field 'id': duplicate id 'x' \(first at .*p\.jsonl:1\)"):
        load_pairs(_write_lines(tmp_path / "p.jsonl", [{**_good(), "id": "x"}, {**_good(), "id": "x"}]))
    with pytest.raises(InvalidInputError, match="no 'split' field"):
        load_pairs(_write_lines(tmp_path / "p.jsonl", [_good()]), split="train")
    with pytest.raises(InvalidInputError, match="split="):
        load_pairs(tmp_path, split="../train")
    with pytest.raises(InvalidInputError, match="no train.jsonl"):
        load_pairs(tmp_path, split="train")
    with pytest.raises(InvalidInputError, match="no pair files"):
        load_pairs(tmp_path)
    with pytest.raises(InvalidInputError, match="no such dataset"):
        load_pairs(tmp_path / "nowhere")
    with pytest.raises(InvalidInputError, match="no groups.jsonl"):
        load_groups(tmp_path)
    assert load_pairs(_write_lines(tmp_path / "p.jsonl", [{**_good(), "image_a": "img/none.png"}]),
                      check_files=False)[0].image_a == tmp_path / "img" / "none.png"


@pytest.mark.parametrize("mutate,message", [
    (lambda o: o.update(images=["img/0_a.png"]), "at least 2 images"),
    (lambda o: o.update(best=2), "field 'best': 2 is not an index"),
    (lambda o: o.update(best=-1), "field 'best'"),
    (lambda o: o.update(best="0"), "field 'best': expected int"),
    (lambda o: o.update(images=["img/0_a.png", "../x.png"]), r"field 'images'\[1\].*escapes"),
])
def test_group_errors(tmp_path: Path, mutate, message: str) -> None:
    _dataset(tmp_path, 1)
    bad = {"images": ["img/0_a.png", "img/0_b.png"], "product_title": "T", "query": ["q"], "best": 1}
    mutate(bad)
    path = _write_lines(tmp_path / "groups.jsonl", [bad])
    with pytest.raises(InvalidInputError, match=message) as info:
        load_groups(tmp_path)
    assert f"{path}:1:" in str(info.value)


def test_writer_refuses_images_outside_the_directory(tmp_path: Path) -> None:
    records = _dataset(tmp_path / "inner")
    (tmp_path / "other").mkdir()
    with pytest.raises(InvalidInputError, match="outside"):
        write_pairs(tmp_path / "other" / "pairs.jsonl", records)
    assert list((tmp_path / "other").iterdir()) == []  # neither the file nor its temporary
