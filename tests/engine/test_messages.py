"""Message validation, image collection and <|image_pad|> expansion, checked against transformers' model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from c4u_engine.engine.chat_template import ChatTemplate
from c4u_engine.engine.messages import collect_images, expand_image_pads, validate_messages
from c4u_engine.engine.tokenizer import Tokenizer
from c4u_engine.errors import InvalidInputError
from tiny_checkpoint import make_test_image


def _good_messages() -> list[dict]:
    return [
        {"role": "system", "content": "You judge ads."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Creative A:"},
                {"type": "image", "image": "/data/a.png"},
                {"type": "text", "text": "Creative B:"},
                {"type": "image", "image": make_test_image(20, 10, 1)},
            ],
        },
        {"role": "assistant", "content": "<think>"},
    ]


def test_valid_messages_are_normalized_copies():
    pil = make_test_image(8, 8, 0, as_pil=True)
    messages = _good_messages()
    messages[1]["content"] += [
        {"type": "image", "image": pil},
        {"type": "image", "image": b"\x89PNG..."},
        {"type": "image", "image": Path("/data/c.png")},
    ]
    out = validate_messages(tuple(messages))
    assert out == messages[:1] + [out[1]] + messages[2:] and out is not messages
    assert [item["type"] for item in out[1]["content"]] == ["text", "image", "text", "image", "image", "image", "image"]
    assert out[1]["content"][5]["image"] is messages[1]["content"][5]["image"]  # images are passed, not copied
    out[1]["content"].append({"type": "text", "text": "new"})
    assert len(messages[1]["content"]) == 7  # the caller's lists are untouched

    images = collect_images(messages)
    assert images[0] == "/data/a.png" and images[2] is pil and len(images) == 5
    assert images[1] is messages[1]["content"][3]["image"]
    assert collect_images([{"role": "user", "content": "no images"}]) == []


BAD_MESSAGES = [
    # (messages, expected fragment of the error)
    ("not a list", "must be a list"),
    ([], "empty"),
    (["hello"], r"messages\[0\]: a message must be a dict"),
    ([{"content": "x"}], r"messages\[0\]: missing key 'role'"),
    ([{"role": "user"}], r"messages\[0\]: missing key 'content'"),
    ([{"role": "user", "content": "x", "name": "bob"}], r"messages\[0\]: unknown key 'name'"),
    ([{"role": "tool", "content": "x"}], r"messages\[0\]: role must be one of"),
    ([{"role": "user", "content": "x"}, {"role": "system", "content": "x"}], r"messages\[1\]: a system message"),
    ([{"role": "user", "content": 3}], r"messages\[0\]: content must be a str or a list"),
    ([{"role": "user", "content": None}], r"messages\[0\]: content must be"),
    ([{"role": "user", "content": []}], r"messages\[0\]: content list is empty"),
    ([{"role": "user", "content": ["text"]}], r"messages\[0\]\.content\[0\]: a content item must be a dict"),
    ([{"role": "user", "content": [{"text": "x"}]}], r"messages\[0\]\.content\[0\]: 'type' must be"),
    ([{"role": "user", "content": [{"type": "video", "video": "v.mp4"}]}], r"content\[0\]: 'type' must be"),
    ([{"role": "user", "content": [{"type": "text"}]}], r"messages\[0\]\.content\[0\]: missing key 'text'"),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], r"content\[0\]: 'text' must be a str"),
    ([{"role": "user", "content": [{"type": "text", "text": "a", "image": "x"}]}], r"unknown key 'image'"),
    ([{"role": "user", "content": [{"type": "image", "url": "http://x"}]}], r"content\[0\]: missing key 'image'"),
    ([{"role": "user", "content": [{"type": "image", "image": "x", "path": "y"}]}], r"unknown key 'path'"),
    ([{"role": "user", "content": [{"type": "image", "image": ""}]}], r"content\[0\]: 'image' must be"),
    ([{"role": "user", "content": [{"type": "image", "image": b""}]}], r"content\[0\]: 'image' must be"),
    ([{"role": "user", "content": [{"type": "image", "image": None}]}], r"'image' must be .* got NoneType"),
    ([{"role": "user", "content": [{"type": "image", "image": [[1, 2]]}]}], r"'image' must be .* got list"),
]


@pytest.mark.parametrize("messages, fragment", BAD_MESSAGES)
def test_bad_messages_name_the_problem(messages, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        validate_messages(messages)
    with pytest.raises(InvalidInputError, match=fragment):
        collect_images(messages)


def test_error_names_later_message_and_item():
    messages = _good_messages()
    messages[1]["content"][3] = {"type": "image", "image": 42}
    with pytest.raises(InvalidInputError, match=r"messages\[1\]\.content\[3\]: 'image' must be"):
        validate_messages(messages)


def test_expand_image_pads_basic():
    assert expand_image_pads([1, 9, 2, 9, 3], [2, 3], 9) == [1, 9, 9, 2, 9, 9, 9, 3]
    assert expand_image_pads([1, 2], [], 9) == [1, 2]
    assert expand_image_pads([9], [np.int64(4)], 9) == [9, 9, 9, 9]
    with pytest.raises(InvalidInputError, match="2 image placeholder.*1 image"):
        expand_image_pads([9, 9], [4], 9)
    with pytest.raises(InvalidInputError, match="0 image placeholder.*1 image"):
        expand_image_pads([1], [4], 9)
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(InvalidInputError, match=r"image_token_counts\[0\]"):
            expand_image_pads([9], [bad], 9)


@pytest.fixture(scope="module")
def tokenizer(tiny_ckpt):
    return Tokenizer.from_dir(tiny_ckpt)


def test_expand_equals_tokenizing_expanded_text(tiny_ckpt, tokenizer):
    """What Qwen2_5_VLProcessor does to the text, done on ids, gives transformers' ids of the expanded text."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tiny_ckpt)
    text = ChatTemplate.from_dir(tiny_ckpt).render(_good_messages()[:2], add_vision_id=True)
    counts = [6, 1]
    parts = text.split("<|image_pad|>")
    assert len(parts) == 3
    expanded_text = parts[0] + "<|image_pad|>" * counts[0] + parts[1] + "<|image_pad|>" * counts[1] + parts[2]
    expected = hf(expanded_text, add_special_tokens=False)["input_ids"]
    assert expand_image_pads(tokenizer.encode(text), counts, tokenizer.image_pad_id) == expected


# A non-default checkpoint: tied embeddings, bf16 weights, head_dim 32 (mrope [4, 6, 6]), 3+3 layers, bigger images.
VARIANT = dict(
    seed=3, tie_word_embeddings=True, dtype="bfloat16", max_pixels=28 * 28 * 64,
    text=dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=3),
    vision=dict(depth=3, fullatt_block_indexes=[2]),
)


@pytest.mark.parametrize("ckpt_kwargs", [{}, VARIANT], ids=["default", "variant"])
def test_tiny_checkpoint_runs_in_transformers(tiny_ckpt_factory, ckpt_kwargs):
    """The factory's checkpoint loads in transformers, and our prompt ids + its image processor run a forward:
    the model itself checks that the expanded pad count equals the number of image features."""
    import torch
    from transformers import AutoImageProcessor, Qwen2_5_VLForConditionalGeneration

    tiny_ckpt = tiny_ckpt_factory(**ckpt_kwargs)
    tokenizer = Tokenizer.from_dir(tiny_ckpt)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_ckpt).eval()
    processor = AutoImageProcessor.from_pretrained(tiny_ckpt)
    assert model.config.image_token_id == tokenizer.image_pad_id
    assert model.config.text_config.vocab_size >= tokenizer.vocab_size
    text_cfg = model.config.text_config
    head_dim = text_cfg.hidden_size // text_cfg.num_attention_heads
    assert sum(text_cfg.rope_parameters["mrope_section"]) == head_dim // 2
    assert model.dtype == getattr(torch, ckpt_kwargs.get("dtype", "float32"))
    tied = model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    assert tied == ckpt_kwargs.get("tie_word_embeddings", False)

    messages = _good_messages()[:2]
    images = [make_test_image(190, 150, 1), make_test_image(40, 70, 2)]
    messages[1]["content"][1]["image"] = images[0]
    messages[1]["content"][3]["image"] = images[1]
    assert collect_images(messages) == images
    vision = processor(images=images, return_tensors="pt")
    grid = vision["image_grid_thw"]
    counts = [int(g.prod()) // processor.merge_size**2 for g in grid]
    assert all(c >= 1 for c in counts) and sum(counts) * 4 == vision["pixel_values"].shape[0]

    ids = tokenizer.encode(ChatTemplate.from_dir(tiny_ckpt).render(messages))
    ids = expand_image_pads(ids, counts, tokenizer.image_pad_id)
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor([ids]), pixel_values=vision["pixel_values"], image_grid_thw=grid
        ).logits
    assert logits.shape == (1, len(ids), model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    one_short = list(ids)
    one_short.remove(tokenizer.image_pad_id)  # one pad too few: transformers refuses, so the counts are checked
    with torch.no_grad(), pytest.raises(ValueError, match="[Ii]mage features and image tokens do not match"):
        model(input_ids=torch.tensor([one_short]), pixel_values=vision["pixel_values"], image_grid_thw=grid)
