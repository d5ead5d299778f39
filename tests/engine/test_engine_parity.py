"""Engine.logits and Engine.chat against transformers' Qwen2_5_VLForConditionalGeneration (fp32, CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine
from c4u_engine.reproduce import TransformersJudge

CONFIGS = {
    "default": {},
    "one_kv_head": dict(text=dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=1),
                        vision=dict(hidden_size=48, num_heads=3, window_size=28, fullatt_block_indexes=[0])),
    "mha_tied_3layers": dict(tie_word_embeddings=True, text=dict(num_key_value_heads=4, num_hidden_layers=3),
                             vision=dict(depth=3, window_size=112, fullatt_block_indexes=[0, 2])),
    "mrope_8_4_4": dict(text=dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                   "mrope_section": [8, 4, 4]}),
                        vision=dict(fullatt_block_indexes=[]), max_pixels=28 * 28 * 24),
}

IMAGE_SIZES = [(57, 91), (120, 40), (33, 75)]  # width, height: odd, non-square, both orientations


def _messages(n_images: int, seed: int = 0) -> list[dict]:
    content: list[dict] = [{"type": "text", "text": "Product title: red running shoes"}]
    for k in range(n_images):
        w, h = IMAGE_SIZES[k]
        content += [{"type": "text", "text": f"Creative {'ABC'[k]}:"},
                    {"type": "image", "image": make_test_image(w, h, seed=seed + k)}]
    content.append({"type": "text", "text": "Which creative would this user click?"})
    return [{"role": "system", "content": "You judge ads."}, {"role": "user", "content": content}]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tiny_ckpt_factory):
    ckpt = tiny_ckpt_factory(**CONFIGS[request.param])
    return Engine(ckpt, backend="torch"), TransformersJudge(ckpt)


@pytest.mark.parametrize("n_images", [0, 1, 2, 3])
def test_logits_match_transformers(pair, n_images):
    engine, judge = pair
    messages = _messages(n_images)
    ours = engine.logits(messages, assistant_prefix="<think>")
    ref = judge.next_logits(messages, assistant_prefix="<think>")
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.parametrize("n_images", [0, 2])
def test_greedy_chat_matches_transformers_generate(pair, n_images):
    engine, judge = pair
    messages = _messages(n_images, seed=7)
    ref = judge.generate(messages, max_new_tokens=20, min_new_tokens=16)
    out = engine.chat(messages, max_new_tokens=20, min_new_tokens=16)
    assert len(out.token_ids) >= 16
    assert out.token_ids == ref
