"""CoT-SFT: examples are the engine's prompts plus targets in both orders; training learns; resume is exact."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file

from c4u_engine.api import Engine
from c4u_engine.data import load_pairs
from c4u_engine.data.creatives import CreativeSpec
from c4u_engine.data.reasoning import make_reasoning
from c4u_engine.engine.prompt import load_prompt_template
from c4u_engine.errors import InvalidInputError
from c4u_engine.train.batching import ExampleBuilder, Item, collate, make_items, orient, swap_reasoning
from c4u_engine.train.engine_bridge import training_session
from c4u_engine.train.model_spec import load_trainable
from c4u_engine.train.sft import ItemOrder, SFTConfig, run_sft
from c4u_engine.train.train_state import cosine_lr


@pytest.fixture(scope="module")
def records(train_data):
    return load_pairs(train_data, "train")


@pytest.fixture(scope="module")
def builder(tiny_train_ckpt, records) -> ExampleBuilder:
    model = load_trainable(tiny_train_ckpt)
    return ExampleBuilder(training_session(tiny_train_ckpt, model), load_prompt_template(tiny_train_ckpt), records)


def test_swapped_reasoning_equals_the_generators_reasoning_for_the_swapped_pair(records):
    for r in records:
        spec_a, spec_b = CreativeSpec.from_dict(r.meta["spec_a"]), CreativeSpec.from_dict(r.meta["spec_b"])
        flipped = "B" if r.label == "A" else "A"
        assert swap_reasoning(r.reasoning) == make_reasoning(spec_b, spec_a, r.product_title, r.query, flipped)


def test_orient_swaps_images_and_label(records):
    r = records[0]
    o = orient(r, swapped=True)
    assert (o.image_a, o.image_b) == (str(r.image_b), str(r.image_a))
    assert o.label != r.label and o.reasoning == swap_reasoning(r.reasoning)
    assert len(make_items(3)) == 12 and {i.form for i in make_items(1)} == {"reason", "fast"}
    with pytest.raises(InvalidInputError, match="forms"):
        make_items(1, ["cot"])


@pytest.mark.parametrize("swapped", [False, True])
def test_serving_prompts_are_prefixes_of_the_training_sequences(builder, tiny_train_ckpt, records, swapped):
    engine = Engine(tiny_train_ckpt, backend="torch")
    pair = orient(records[1], swapped)
    id_a, id_b = engine.answer_token_ids
    for form, mode in (("reason", "reason"), ("fast", "fast")):
        example = builder.example(Item(1, swapped, form))
        messages, prefix = engine.comparison_messages(pair.image_a, pair.image_b, pair.profile, mode=mode)
        served = engine.core.session.tokenize(messages, prefix).ids
        assert np.array_equal(example.ids[: len(served)], served)
        assert example.n_prompt < len(served)  # the loss also covers the assistant prefix's tokens
        tok = engine.core.session.tokenizer
        assert example.ids[-1] == tok.im_end_id
        if form == "fast":  # the token after the fast prefix is the label's answer token
            assert example.ids[len(served)] == (id_a if pair.label == "A" else id_b)
        else:
            assert tok.decode(example.ids[example.n_prompt:].tolist()).startswith("<think>" + pair.reasoning[:40])


def test_collate_pads_right_and_aligns_labels(builder):
    examples = [builder.example(Item(0, False, "reason")), builder.example(Item(0, True, "fast"))]
    batch = collate(examples, builder.engine, builder.engine.tokenizer.im_end_id)
    short = examples[1]
    assert batch.attention_mask[1].sum() == len(short.ids)
    n_target = len(short.ids) - short.n_prompt
    assert batch.labels[1, :n_target].tolist() == short.ids[short.n_prompt:].tolist()
    assert (batch.labels[1, n_target:] == -100).all()
    assert batch.logits_index[1, 0] == short.n_prompt - 1
    assert batch.pixel_values.shape[0] == 4 * 64 and batch.grid_thw.tolist() == [[1, 8, 8]] * 4


def test_item_order_is_a_permutation_per_epoch_and_reproducible():
    items = make_items(5)  # 20 items
    order = ItemOrder(items, 8, seed=1)
    first_epoch = order.batch(0) + order.batch(1) + order.batch(2)[:4]
    key = lambda i: (i.pair, i.swapped, i.form)  # noqa: E731
    assert sorted(first_epoch, key=key) == sorted(items, key=key)
    assert ItemOrder(items, 8, seed=1).batch(2) == order.batch(2)
    assert ItemOrder(items, 8, seed=2).batch(0) != order.batch(0)


def test_cosine_schedule():
    assert cosine_lr(0, 1.0, 100, 10) == pytest.approx(0.1)
    assert cosine_lr(9, 1.0, 100, 10) == pytest.approx(1.0)
    assert cosine_lr(100, 1.0, 100, 10, min_ratio=0.1) == pytest.approx(0.1)


def _log(state_dir):
    return [json.loads(line) for line in (state_dir / "log.jsonl").read_text().splitlines()]


def test_sft_overfits_one_pair(train_data, tokenizer_file, tiny_spec, tmp_path):
    config = SFTConfig(str(train_data), str(tmp_path / "sft"), str(tokenizer_file), spec=tiny_spec, max_pairs=1,
                       batch_size=4, max_steps=20, lr=1e-2, warmup_steps=1, save_every=100)
    result = run_sft(config, progress=False)
    losses = [r["loss"] for r in _log(tmp_path / "sft_state")]
    assert len(losses) == 20 and result.last_loss == losses[-1]
    assert losses[-1] < 0.5 * losses[0]
    Engine(tmp_path / "sft")  # the trained directory is a loadable checkpoint
    with pytest.raises(InvalidInputError, match="resume"):
        run_sft(config, progress=False)  # states exist: starting over needs resume=True or another directory


def test_resume_reproduces_the_uninterrupted_run(train_data, tokenizer_file, tiny_spec, tmp_path):
    config = SFTConfig(str(train_data), str(tmp_path / "sft"), str(tokenizer_file), spec=tiny_spec, max_pairs=3,
                       batch_size=2, max_steps=4, lr=1e-3, warmup_steps=1, save_every=2, keep_states=5)
    run_sft(config, progress=False)
    states = tmp_path / "sft_state"
    straight = load_file(tmp_path / "sft" / "model.safetensors")
    straight_log = _log(states)
    (states / "step_0000004.pt").unlink()  # as if the run had stopped after step 2's save
    shutil.copyfile(tmp_path / "sft" / "model.safetensors", tmp_path / "final.safetensors")
    run_sft(config, resume=True, progress=False)
    resumed = load_file(tmp_path / "sft" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert np.array_equal(straight[name].numpy(), resumed[name].numpy()), name
    assert [r["loss"] for r in _log(states)] == [r["loss"] for r in straight_log]
    with pytest.raises(InvalidInputError, match="different settings"):
        run_sft(SFTConfig(**{**config.__dict__, "lr": 2e-3}), resume=True, progress=False)


def test_perceive_example_describes_one_image_of_the_pair(builder, records, tiny_train_ckpt):
    from c4u_engine.data.description import describe_creative

    engine = Engine(tiny_train_ckpt, backend="torch")
    for swapped, key in ((False, "spec_a"), (True, "spec_b")):
        example = builder.example(Item(0, swapped, "perceive"))
        assert len(example.images) == 1
        shown = records[0].image_b if swapped else records[0].image_a
        assert np.array_equal(example.images[0].pixels, engine.core.session.load_images([str(shown)])[0].pixels)
        target = builder.engine.tokenizer.decode(example.ids[example.n_prompt:].tolist(), skip_special_tokens=False)
        assert target == describe_creative(CreativeSpec.from_dict(records[0].meta[key])) + "<|im_end|>"


def test_perceive_needs_generator_specs(builder, records):
    from dataclasses import replace

    plain = ExampleBuilder(builder.engine, builder.template, [replace(records[0], meta=None)])
    with pytest.raises(InvalidInputError, match="perceive form needs the generator's meta.spec_a"):
        plain.example(Item(0, False, "perceive"))
    assert plain.example(Item(0, False, "reason")).n_prompt > 0  # the comparison forms need no specs


def test_sft_with_all_forms_learns_and_splits_forms(train_data, tokenizer_file, tiny_spec, tmp_path):
    config = SFTConfig(str(train_data), str(tmp_path / "sft"), str(tokenizer_file), spec=tiny_spec, max_pairs=1,
                       batch_size=6, max_steps=25, lr=1e-2, warmup_steps=1, save_every=100,
                       forms=("reason", "fast", "perceive"))
    run_sft(config, progress=False)
    log = _log(tmp_path / "sft_state")
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert make_items(1, config.forms) == [Item(0, s, f) for s in (False, True) for f in config.forms]


def test_unknown_or_empty_forms_are_refused():
    expected = r"forms=\['reason', 'describe'\]; valid forms: \['reason', 'fast', 'perceive'\]"
    with pytest.raises(InvalidInputError, match=expected):
        make_items(2, ("reason", "describe"))
    with pytest.raises(InvalidInputError, match="valid forms"):
        make_items(2, ())


def test_item_image_classes_follow_the_order_the_item_shows_its_images(records):
    from c4u_engine.train.perception import item_image_classes, spec_classes

    r = records[0]
    a, b = spec_classes(r.meta, "spec_a"), spec_classes(r.meta, "spec_b")
    assert item_image_classes(r, False, "reason") == [a, b] and item_image_classes(r, True, "fast") == [b, a]
    assert item_image_classes(r, False, "perceive") == [a] and item_image_classes(r, True, "perceive") == [b]


def test_sft_with_vision_aux_loss_learns_both_and_resumes_exactly(train_data, tokenizer_file, tiny_spec, tmp_path):
    config = SFTConfig(str(train_data), str(tmp_path / "sft"), str(tokenizer_file), spec=tiny_spec, max_pairs=2,
                       batch_size=4, max_steps=16, lr=5e-3, warmup_steps=1, save_every=8,
                       forms=("reason", "fast", "perceive"), vision_aux_weight=0.5)
    run_sft(config, progress=False)
    log = _log(tmp_path / "sft_state")
    aux = [r["vision_aux_loss"] for r in log]
    assert all(a > 0 for a in aux) and np.mean(aux[-4:]) < np.mean(aux[:4])
    assert np.mean([r["loss"] for r in log[-4:]]) < np.mean([r["loss"] for r in log[:4]])
    straight = load_file(tmp_path / "sft" / "model.safetensors")
    (tmp_path / "sft_state" / "step_0000016.pt").unlink()
    run_sft(config, resume=True, progress=False)  # the heads' weights and moments come back with the state
    resumed = load_file(tmp_path / "sft" / "model.safetensors")
    for name in straight:
        assert np.array_equal(straight[name].numpy(), resumed[name].numpy()), name
    assert [r["vision_aux_loss"] for r in _log(tmp_path / "sft_state")] == aux


@pytest.mark.parametrize("weight", [-0.1, float("nan")])
def test_sft_refuses_a_negative_or_nan_vision_aux_weight(train_data, tokenizer_file, tiny_spec, tmp_path, weight):
    config = SFTConfig(str(train_data), str(tmp_path / "sft"), str(tokenizer_file), spec=tiny_spec, max_steps=1,
                       vision_aux_weight=weight)
    with pytest.raises(InvalidInputError, match=f"vision_aux_weight={weight}; expected >= 0"):
        run_sft(config, progress=False)
