"""The synthetic usability generator (six classes, graded defects) and its RF1M-like directory layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from c4u_engine.data.usability import _cutout, sample
from c4u_engine.screening.classes import CLASSES
from c4u_engine.data.usability_dataset import load_usability, write_usability
from c4u_engine.errors import InvalidInputError


def test_sample_is_a_pure_function_of_seed_and_index():
    a, b, c = sample(3, 7), sample(3, 7), sample(3, 8)
    assert np.array_equal(np.asarray(a.generated), np.asarray(b.generated)) and a.label == b.label
    assert np.array_equal(np.asarray(a.product), np.asarray(b.product)) and a.text == b.text
    assert not np.array_equal(np.asarray(a.generated), np.asarray(c.generated))


def test_all_six_classes_with_graded_difficulty():
    drawn = [sample(0, i) for i in range(150)]
    assert {s.label for s in drawn} == set(CLASSES)
    for label in CLASSES[1:]:
        d = [sample(1, i, label=label).difficulty for i in range(12)]
        assert all(0.0 <= x <= 1.0 for x in d) and max(d) - min(d) > 0.4, (label, d)  # subtle and blatant cases
    assert all(s.difficulty == 0.0 for s in drawn if s.label == "available")


def _opaque(image) -> int:
    return int((np.asarray(image.getchannel("A")) > 0).sum())


def test_the_cutout_is_intact_except_when_unsuitable():
    for i in range(6):
        ok = sample(2, i, label="available")
        intact = _cutout(ok.meta["category"], ok.meta["hue"], 256)
        assert abs(_opaque(ok.product) - _opaque(intact)) <= 0.01 * _opaque(intact)
        bad = sample(2, i, label="unsuitable")
        intact = _cutout(bad.meta["category"], bad.meta["hue"], 256)
        assert _opaque(bad.product) < 0.97 * _opaque(intact), bad.meta  # truncated or holed


def test_size_mismatch_lies_outside_the_plausible_scale():
    from c4u_engine.data.usability import PLAUSIBLE_SCALE, _kind

    for i in range(10):
        s = sample(4, i, label="size_mismatch")
        lo, hi = PLAUSIBLE_SCALE[_kind(s.meta["category"])]
        assert not lo <= s.meta["scale"] <= hi


def test_bad_arguments():
    with pytest.raises(InvalidInputError, match="label"):
        sample(0, 0, label="nice")
    with pytest.raises(InvalidInputError, match="size"):
        sample(0, 0, size=10)


def test_write_then_load_a_directory(tmp_path):
    write_usability(tmp_path, "test", seed=5, n=6)
    records = load_usability(tmp_path, "test")
    assert [r.label for r in records] == [sample(5, i).label for i in range(6)]
    assert all(r.generated.is_file() and r.product.is_file() for r in records)
    assert records[0].text == sample(5, 0).text


@pytest.mark.parametrize("change, message", [
    ({"label": "great"}, "field 'label'"),
    ({"generated": "../outside.png"}, "must stay inside"),
    ({"product": "images/missing.png"}, "no such image"),
    ({"text": 3}, "field 'text'"),
])
def test_a_bad_record_names_file_line_and_field(tmp_path, change, message):
    path = write_usability(tmp_path, "train", seed=0, n=2)
    lines = path.read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), **change})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidInputError, match=message) as info:
        load_usability(tmp_path, "train")
    assert "train.jsonl:2" in str(info.value)


def test_a_missing_split_lists_those_present(tmp_path):
    write_usability(tmp_path, "train", seed=0, n=1)
    with pytest.raises(InvalidInputError, match=r"splits found: \['train'\]"):
        load_usability(tmp_path, "test")
