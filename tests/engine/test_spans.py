"""Prompt spans come from the template: the pieces tokenize exactly as the whole prompt, for both presets, and the
Creative4U paper's layout (protocol after the images) is judged exactly as its messages say."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine
from c4u_engine.engine.prompt import PROMPT_PRESETS, PromptTemplate
from c4u_engine.engine.chain import PromptChain
from c4u_engine.engine.spans import ComparisonSpans
from c4u_engine.errors import InvalidInputError, ModelFormatError
from c4u_engine.profile import Profile

PROFILES = [
    Profile(title="Trail running shoes", queries=("waterproof shoes", "running sale")),
    Profile(title="Ünïcode dress, 50% off!", queries=(), extra="likes\nnew lines  and   spaces"),
    Profile(title="x", queries=("a;b", "c: d")),
]


@pytest.fixture(scope="module")
def images():
    return [make_test_image(56, 56, seed=1), make_test_image(84, 28, seed=2)]


@pytest.mark.parametrize("preset", sorted(PROMPT_PRESETS))
@pytest.mark.parametrize("profile", PROFILES, ids=["plain", "unicode-extra", "punctuation"])
def test_spans_tokenize_as_the_whole_prompt(tiny_ckpt, images, preset, profile):
    eng = Engine(tiny_ckpt, backend="torch", prompt=preset)
    core = eng.core.session
    spans = ComparisonSpans(core, eng.prompt, eng.answer, profile)
    for a, b in ((0, 1), (1, 0)):
        ga, gb = (core.grid_of(core.load_images([images[i]])[0]) for i in (a, b))
        for mode in ("fast", "reason"):
            messages, prefix = eng.comparison_messages(images[a], images[b], profile, mode)
            whole = core.tokenize(messages, prefix)
            layout = spans.layout(ga, gb, mode)
            assert np.array_equal(layout.ids, whole.ids)
            assert np.array_equal(layout.positions, whole.positions)
            starts = np.flatnonzero(whole.ids == core.tokenizer.vision_start_id)
            ends = np.flatnonzero(whole.ids == core.tokenizer.vision_end_id)
            assert (layout.prefix_end, layout.a_end) == (starts[0], ends[0] + 1)
    eng.close()


def test_the_paper_layout_puts_the_protocol_after_the_images(tiny_ckpt, images):
    eng = Engine(tiny_ckpt, backend="torch", prompt="creative4u_paper")
    messages, _ = eng.comparison_messages(images[0], images[1], PROFILES[0])
    assert [m["role"] for m in messages] == ["user"]  # no system turn of our own
    content = messages[0]["content"]
    assert content[0]["text"].startswith("High-frequency queries: waterproof shoes; running sale; Product title: ")
    assert [c["type"] for c in content] == ["text", "image", "text", "image", "text"]
    assert "Evaluation protocol" in content[-1]["text"] and "Output format" in content[-1]["text"]
    c = eng.compare(images[0], images[1], PROFILES[0])
    messages, prefix = eng.comparison_messages(images[0], images[1], PROFILES[0])
    logits = eng.logits(messages, prefix)
    ia, ib = eng.answer_token_ids
    assert abs(c.prob_a - 1 / (1 + np.exp(logits[ib] - logits[ia]))) < 1e-5
    eng.close()


def test_a_checkpoint_names_its_preset(tiny_ckpt, tmp_path, images):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    (ckpt / "c4u_prompt.json").write_text(json.dumps({"preset": "creative4u_paper", "question": ";\nWhich one?"}))
    eng = Engine(ckpt, backend="torch")
    assert eng.prompt.label_b == PROMPT_PRESETS["creative4u_paper"].label_b and eng.prompt.question == ";\nWhich one?"
    eng.close()
    (ckpt / "c4u_prompt.json").write_text(json.dumps({"preset": "nope"}))
    with pytest.raises(ModelFormatError, match="unknown prompt preset"):
        Engine(ckpt, backend="torch")
    with pytest.raises(InvalidInputError, match="preset"):
        Engine(tiny_ckpt, backend="torch", prompt="nope")


def test_a_template_that_merges_text_across_images_is_refused(tiny_ckpt):
    # three images in the prompt cannot be cut into [prefix][A][rest with B]
    class ThreeImages(PromptTemplate):
        def messages(self, profile, image_a, image_b):
            msgs = super().messages(profile, image_a, image_b)
            msgs[-1]["content"].append({"type": "image", "image": image_b})
            return msgs

    with pytest.raises(ModelFormatError, match="exactly two images"):
        Engine(tiny_ckpt, backend="torch", prompt=ThreeImages())


@pytest.mark.parametrize("preset", sorted(PROMPT_PRESETS))
def test_the_system_turn_is_the_profile_independent_start_of_the_prefix(tiny_ckpt, preset):
    eng = Engine(tiny_ckpt, backend="torch", prompt=preset)
    a, b = (ComparisonSpans(eng.core.session, eng.prompt, eng.answer, p) for p in PROFILES[:2])
    head = a.system_ids
    assert len(head) > 0 and np.array_equal(head, b.system_ids)
    chains = [PromptChain(spans, [], []) for spans in (a, b)]
    assert chains[0].system.key == chains[1].system.key and chains[0].prefix.key != chains[1].prefix.key
    assert chains[0].prefix.parent == chains[0].system.key
    assert np.array_equal(a.prefix_ids[: len(head)], head) and len(a.prefix_ids) > len(head)
    assert head[-1] == eng.core.session.tokenizer.im_start_id  # cut right after a special token: exact tokenization
    eng.close()


def test_requests_for_other_profiles_reuse_the_system_turn(tiny_ckpt, images):
    eng = Engine(tiny_ckpt, backend="torch")
    first = eng.select(images, PROFILES[0])
    second = eng.select(images, PROFILES[2])  # another profile: its own prefix, the same system turn
    head = len(ComparisonSpans(eng.core.session, eng.prompt, eng.answer, PROFILES[0]).system_ids)
    p0, p2 = (len(ComparisonSpans(eng.core.session, eng.prompt, eng.answer, p).prefix_ids)
              for p in (PROFILES[0], PROFILES[2]))
    # everything after the prefix costs the same; the second request computes its prefix without the head
    assert head > 0 and first.stats["tokens_prefilled"] - p0 == second.stats["tokens_prefilled"] - (p2 - head)
    assert second.stats["prefix_cache_hits"] == 1  # the head
    cold = Engine(tiny_ckpt, backend="torch", prefix_cache_bytes=0, encoder_cache_bytes=0)
    ref = cold.select(images, PROFILES[2], use_cache=False)
    assert ref.ranking == second.ranking
    assert all(abs(x.prob_a - y.prob_a) < 1e-5 for x, y in zip(ref.comparisons, second.comparisons))
    eng.close()
    cold.close()
