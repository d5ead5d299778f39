"""Usability samples made from the judge's creatives (data/creative_usability.py): deterministic, labelled as asked,
and drawn with the judge's own renderer where nothing is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from c4u_engine.data import creatives as cr
from c4u_engine.data.catalog import CATALOGUE
from c4u_engine.data.creative_usability import KINDS, NO_PRODUCT, _layer_fn, _paste_fn, creative_sample
from c4u_engine.data.pairs import sample_spec
from c4u_engine.errors import InvalidInputError
from c4u_engine.screening.classes import CLASSES


def test_same_seed_and_index_same_pixels_and_every_kind_is_labelled():
    for k, kind in enumerate(KINDS):
        a, b = creative_sample(5, k, kind=kind), creative_sample(5, k, kind=kind)
        assert np.array_equal(np.asarray(a.generated), np.asarray(b.generated))
        assert a.label == ("indistinctiveness" if kind == NO_PRODUCT else kind) and a.label in CLASSES
        assert a.product.mode == "RGBA" and a.meta["source"] == "creatives"
        if kind != "available":
            assert a.meta["defect"]
    assert creative_sample(5, 0, kind=NO_PRODUCT).meta["defect"] == NO_PRODUCT
    drawn = [creative_sample(9, i).label for i in range(60)]
    assert set(drawn) == set(CLASSES)


def test_the_defects_change_the_ad_and_an_unknown_kind_is_an_error():
    usable = np.asarray(creative_sample(3, 7, kind="available", size=128).generated, np.int16)
    for kind in KINDS[1:]:
        other = np.asarray(creative_sample(3, 7, kind=kind, size=128).generated, np.int16)
        assert other.shape == usable.shape and np.abs(other - usable).mean() > 0.5, kind
    with pytest.raises(InvalidInputError, match="valid kinds"):
        creative_sample(3, 7, kind="blurry")


@pytest.mark.parametrize("seed", range(6))
def test_the_true_product_pasted_as_the_judge_pastes_it_gives_the_judges_pixels(seed):
    rng = np.random.default_rng(seed)
    spec = sample_spec(rng, CATALOGUE[seed % len(CATALOGUE)])
    layer = _layer_fn(spec.category, spec.product_hue, None, 1, 1.0)
    paste = _paste_fn(layer, scale=None, surface="none", placement="stand", offset=0.0, shadow="attached", seed=1)
    ours = cr.render(spec, 128, product=cr.ProductDrawing(paste=paste, layer=layer))
    assert np.array_equal(np.asarray(ours), np.asarray(cr.render(spec, 128)))
