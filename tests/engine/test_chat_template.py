"""ChatTemplate renders exactly what transformers' apply_chat_template(tokenize=False) renders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from c4u_engine.engine.chat_template import QWEN2_5_VL_CHAT_TEMPLATE, ChatTemplate
from c4u_engine.errors import InvalidInputError, ModelFormatError
from tiny_checkpoint import make_test_image


def _image_item(kind: str, seed: int = 0) -> dict:
    if kind == "path":
        return {"type": "image", "image": f"/data/creative_{seed}.png"}
    if kind == "pil":
        return {"type": "image", "image": make_test_image(16, 12, seed, as_pil=True)}
    return {"type": "image", "image": make_test_image(16, 12, seed)}


CONVERSATIONS = {
    "text_only": [{"role": "user", "content": "Which creative is better?"}],
    "text_items": [{"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}],
    "system": [
        {"role": "system", "content": "You judge ads."},
        {"role": "user", "content": [{"type": "text", "text": "Creative A:"}, _image_item("path")]},
    ],
    "multi_image": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Product title: shoes\nCreative A:"},
                _image_item("pil", 1),
                {"type": "text", "text": "\nCreative B:"},
                _image_item("ndarray", 2),
                {"type": "text", "text": "\nWhich one?"},
            ],
        }
    ],
    "multi_turn": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [_image_item("path", 3), {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "<think>a shoe</think><answer>A</answer>"},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, _image_item("pil", 4)]},
        {"role": "assistant", "content": [{"type": "text", "text": "<think>"}]},
    ],
    "unicode_whitespace": [{"role": "user", "content": "  héllo\n\n\t🎉  {{ not jinja }} {% raw %} "}],
}


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_ckpt):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_ckpt)


@pytest.fixture(scope="module")
def template(tiny_ckpt):
    return ChatTemplate.from_dir(tiny_ckpt)


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("add_vision_id", [None, True])
def test_render_equals_transformers(template, hf_tokenizer, name, add_generation_prompt, add_vision_id):
    messages = CONVERSATIONS[name]
    extra = {} if add_vision_id is None else {"add_vision_id": add_vision_id}
    expected = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
    )
    assert template.render(messages, add_generation_prompt=add_generation_prompt, **extra) == expected


def test_qwen_template_text_is_the_real_one():
    # Independent of transformers: the strings Qwen2.5-VL-Instruct's template is known to produce.
    template = ChatTemplate(QWEN2_5_VL_CHAT_TEMPLATE)
    messages = [{"role": "user", "content": [_image_item("path"), {"type": "text", "text": "Describe."}]}]
    assert template.render(messages) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    two = [{"role": "system", "content": "S"}, {"role": "user", "content": [_image_item("path"), _image_item("path")]}]
    assert template.render(two, add_generation_prompt=False, add_vision_id=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n"
        "Picture 1: <|vision_start|><|image_pad|><|vision_end|>"
        "Picture 2: <|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
    )


CUSTOM_TEMPLATE = """\
{{ bos_token or '' }}{% set ns = namespace(n=0) %}
{% for m in messages %}
    {% if m.role == 'system' %}{% continue %}{% endif %}
    {% set ns.n = ns.n + 1 %}
    [{{ ns.n }}] {{ m.role | upper }}: {{ m.content | tojson }}
    {% if m.content is not string %}{% for c in m.content %}{% if c.image is defined %}<{{ c.image }}>{% endif %}\
{% endfor %}{% endif %}
    {% generation %}{{ eos_token }}{% endgeneration %}
    {% if loop.index > 6 %}{% break %}{% endif %}
{% endfor %}
{{ dict(a=1) | tojson(indent=1) }} {{ pad_token }} {{ unk_token }} {{ extra_var | default('none') }}
{% if add_generation_prompt %}GO{% endif %}"""


def test_custom_template_features_equal_transformers(tiny_ckpt, hf_tokenizer):
    # tojson without HTML escaping, loop controls, namespaces, {% generation %}, dict(), special-token variables,
    # and rich objects (PIL, arrays) in messages seen as "<Type>" placeholders
    html = {"role": "user", "content": "<b>&'\"</b> é", "name": None}  # None-valued keys are dropped
    cut = {"role": "user", "content": "CUT_HERE"}
    messages = [html] + CONVERSATIONS["multi_turn"] + CONVERSATIONS["multi_image"] + [cut]
    template = ChatTemplate(CUSTOM_TEMPLATE, ChatTemplate.from_dir(tiny_ckpt).special_tokens)
    for extra in ({}, {"extra_var": "x", "eos_token": "EOS!"}):
        expected = hf_tokenizer.apply_chat_template(
            messages, chat_template=CUSTOM_TEMPLATE, tokenize=False, add_generation_prompt=True, **extra
        )
        assert template.render(messages, **extra) == expected
    assert "<b>&'\\\"</b>" in expected and "<Image>" in expected and "<ndarray>" in expected
    assert "CUT_HERE" not in expected  # {% break %} stopped the loop


def test_special_token_variables(tiny_ckpt, tmp_path, hf_tokenizer):
    assert ChatTemplate.from_dir(tiny_ckpt).special_tokens == hf_tokenizer.special_tokens_map
    # Qwen2Tokenizer's defaults apply to names tokenizer_config.json leaves out
    cfg = {"tokenizer_class": "Qwen2Tokenizer", "chat_template": "{{ eos_token }}|{{ unk_token }}|{{ bos_token }}"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert ChatTemplate.from_dir(tmp_path).render([{"role": "user", "content": ""}]) == "<|endoftext|>|<|endoftext|>|"


def test_strftime_now_and_raise_exception():
    template = ChatTemplate("{{ strftime_now('%Y') }}{% if messages[0].role == 'assistant' %}"
                            "{{ raise_exception('first message must not be from the assistant') }}{% endif %}")
    assert template.render([{"role": "user", "content": "x"}]).isdigit()
    with pytest.raises(InvalidInputError, match="first message must not be from the assistant"):
        template.render([{"role": "assistant", "content": "x"}])


def test_template_runtime_errors_are_invalid_input():
    with pytest.raises(InvalidInputError, match="TypeError"):
        ChatTemplate("{{ messages[0].content + 1 }}").render([{"role": "user", "content": "x"}])
    with pytest.raises(InvalidInputError, match="underscore"):
        ChatTemplate("{% set ns = namespace(_x=1) %}").render([{"role": "user", "content": "x"}])
    with pytest.raises(InvalidInputError, match="unsafe|access"):  # the sandbox refuses attribute escapes
        ChatTemplate("{{ messages.__class__.__mro__ }}").render([{"role": "user", "content": "x"}])


@pytest.mark.parametrize("bad", [[], None, "hello", [["nested"]]])
def test_render_refuses_non_message_lists(template, bad):
    with pytest.raises(InvalidInputError):
        template.render(bad)


def test_from_dir_source_order(tiny_ckpt, tmp_path):
    shutil.copy(tiny_ckpt / "tokenizer_config.json", tmp_path)
    msgs = [{"role": "user", "content": "x"}]
    assert ChatTemplate.from_dir(tmp_path).source == QWEN2_5_VL_CHAT_TEMPLATE  # tokenizer_config.json
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "json:{{ messages[0].content }}"}))
    assert ChatTemplate.from_dir(tmp_path).render(msgs) == "json:x"
    (tmp_path / "chat_template.jinja").write_text("jinja:{{ messages[0].content }}\n\n")
    assert ChatTemplate.from_dir(tmp_path).render(msgs) == "jinja:x\n"  # jinja drops one trailing newline


def test_named_template_list(tmp_path):
    templates = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "default"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": templates}))
    assert ChatTemplate.from_dir(tmp_path).render([{"role": "user", "content": "x"}]) == "default"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": templates[:1]}))
    with pytest.raises(ModelFormatError, match="default"):
        ChatTemplate.from_dir(tmp_path)


def test_missing_and_broken_templates(tmp_path):
    with pytest.raises(ModelFormatError, match="no chat template"):
        ChatTemplate.from_dir(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{oops")
    with pytest.raises(ModelFormatError, match="tokenizer_config.json"):
        ChatTemplate.from_dir(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": 3}))
    with pytest.raises(ModelFormatError, match="chat_template.json"):
        ChatTemplate.from_dir(tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}unclosed")
    with pytest.raises(ModelFormatError, match="chat_template.jinja.*syntax"):
        ChatTemplate.from_dir(tmp_path)


def test_numpy_scalars_keep_their_truth_value(hf_tokenizer):
    source = "{% if flag %}yes{% else %}no{% endif %}"
    msgs = [{"role": "user", "content": "x"}]
    for flag in (np.bool_(False), np.bool_(True), np.int64(0)):
        expected = hf_tokenizer.apply_chat_template(msgs, chat_template=source, tokenize=False, flag=flag)
        assert ChatTemplate(source).render(msgs, add_generation_prompt=False, flag=flag) == expected
