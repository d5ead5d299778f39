"""GRPO: rewards, advantages, the loss, batched sampling with the engine's decode, and one full step."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from c4u_engine.api import Engine
from c4u_engine.data import load_pairs
from c4u_engine.engine.answer import empty_thinking_ids
from c4u_engine.engine.prompt import load_prompt_template
from c4u_engine.engine.sampling import SamplingParams
from c4u_engine.errors import InvalidInputError
from c4u_engine.train.batching import ExampleBuilder, orient
from c4u_engine.train.engine_bridge import training_session
from c4u_engine.train.grpo import (
    GRPOConfig, grpo_token_loss, policy_step, rollout, run_grpo, sample_completions, update_rows,
)
from c4u_engine.train.model_spec import load_trainable
from c4u_engine.train.rewards import (
    correctness_reward, format_reward, group_advantages, section_reward, total_reward,
)


@pytest.mark.parametrize("text, expected", [
    ("<think>A is cleaner.</think><answer>A</answer>", 1.0),
    ("<think>\nA is cleaner.\n</think>\n<answer> B </answer>\n", 1.0),
    ("<think></think><answer>A</answer>", 0.0),  # no reasoning
    ("<think>   </think><answer>A</answer>", 0.0),
    ("<think>x</think><answer>C</answer>", 0.0),
    ("<think>x</think><answer>A</answer> and more", 0.0),
    ("<think>x<answer>A</answer></think><answer>A</answer>", 0.0),
    ("<think>x</think><answer>A</answer><answer>B</answer>", 0.0),
    ("A is cleaner.</think><answer>A</answer>", 0.0),
    ("<think>x</think>", 0.0),
])
def test_format_reward(text, expected):
    assert format_reward(text) == expected


def test_correctness_reward_reads_the_answer_like_the_engine():
    assert correctness_reward("<think>x</think><answer>B</answer>", "B") == 1.0
    assert correctness_reward("<think>x</think><answer>B</answer>", "A") == 0.0
    assert correctness_reward("<think>x</think><answer>A</answer><answer>B</answer>", "A") == 0.0  # conflicting
    assert correctness_reward("no answer", "A") == 0.0
    assert total_reward("<think>x</think><answer>A</answer>", "A", 0.5, 2.0) == 2.5
    with pytest.raises(InvalidInputError):
        correctness_reward("", "C")


def test_section_reward_counts_the_protocol_sections_written_as_the_reference(train_data):
    reference = next(r.reasoning for r in load_pairs(train_data, "train") if r.reasoning.count("\n") >= 8)
    lines = reference.splitlines()
    sections = [line for line in lines if line.split(":", 1)[0] in (
        "Query match", "Title match", "Text in image", "Models and props", "Layout", "Product subject", "Background")]
    assert len(sections) == 7
    assert section_reward(f"<think>{reference}</think><answer>A</answer>", reference) == 1.0
    assert section_reward(f"<think>{reference}", reference) == 1.0  # unfinished: still graded
    one_wrong = reference.replace(sections[4], sections[4].split(":", 1)[0] + ": A: nothing. Similar.")
    assert section_reward(f"<think>{one_wrong}</think><answer>A</answer>", reference) == pytest.approx(6 / 7)
    # Sections after </think> are not reasoning; a free-form reference (real data) gives no section reward.
    assert section_reward(f"<think>x</think><answer>A</answer>{reference}", reference) == 0.0
    assert section_reward(f"<think>{reference}</think>", "The left one looks better.") == 0.0


def test_group_advantages():
    adv = group_advantages([1.0, 0.0, 2.0, 2.0, 0.0, 0.0, 0.0, 3.0], 4)
    first, second = adv[:4], adv[4:]
    assert first.mean() == pytest.approx(0) and first.std() == pytest.approx(1, abs=1e-3)
    assert first[2] > first[0] > first[1] and second[3] > 0 > second[0]
    assert np.all(group_advantages([1.0] * 4, 2) == 0)
    with pytest.raises(InvalidInputError):
        group_advantages([1.0] * 5, 2)


def test_grpo_loss_at_the_reference_is_the_policy_gradient():
    logits = torch.randn(2, 3, requires_grad=True)
    logp = torch.log_softmax(logits, dim=-1)
    adv = torch.tensor([1.0, -0.5])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss, kl = grpo_token_loss(logp, logp.detach(), logp.detach(), adv, mask, beta=0.1, clip_eps=0.2)
    assert torch.allclose(kl, torch.zeros(2))
    expected = torch.autograd.grad((-(adv[:, None] * logp) * mask / mask.sum(1, keepdim=True)).sum(), logits,
                                   retain_graph=True)[0]
    loss.sum().backward()
    assert torch.allclose(logits.grad, expected)


def test_grpo_kl_is_the_k3_estimator():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    _, kl = grpo_token_loss(logp, logp, ref, torch.zeros(1), torch.ones(1, 2), beta=1.0, clip_eps=0.2)
    d = ref - logp
    assert kl.item() == pytest.approx(float((torch.exp(d) - d - 1).mean()))
    assert kl.item() > 0


@pytest.fixture(scope="module")
def bench(tiny_train_ckpt, train_data):
    model = load_trainable(tiny_train_ckpt)
    engine = training_session(tiny_train_ckpt, model)
    builder = ExampleBuilder(engine, load_prompt_template(tiny_train_ckpt), load_pairs(train_data, "train"))
    return model, engine, builder


def test_greedy_group_sampling_equals_engine_chat(bench, tiny_train_ckpt):
    model, engine, builder = bench
    pairs = [orient(builder.records[i], i % 2 == 1) for i in (0, 3)]  # different titles: prompts of unequal length
    prompts = [builder.prompt(p, "<think>") for p in pairs]
    assert len(prompts[0].ids) != len(prompts[1].ids)
    tokens, finished = sample_completions(engine, prompts, 2, 12, SamplingParams())
    assert len(tokens) == 4 and tokens[0] == tokens[1] and tokens[2] == tokens[3]
    served = Engine(tiny_train_ckpt, backend="torch")
    for pair, got in zip(pairs, (tokens[0], tokens[2])):
        messages, prefix = served.comparison_messages(pair.image_a, pair.image_b, pair.profile, mode="reason")
        ref = served.chat(messages, max_new_tokens=12, assistant_prefix=prefix).token_ids
        assert got == ref[: len(got)]


def test_group_sampling_bans_suppressed_first_tokens(bench):
    model, engine, builder = bench
    prompt = builder.prompt(orient(builder.records[0], False), "<think>")
    free, _ = sample_completions(engine, [prompt], 2, 3, SamplingParams())
    banned, _ = sample_completions(engine, [prompt], 2, 3, SamplingParams(), suppress_first=(free[0][0],))
    assert banned[0][0] != free[0][0] and banned[0] == banned[1]
    closing = empty_thinking_ids(engine.tokenizer, "<think>")
    assert closing and engine.tokenizer.decode(list(closing), skip_special_tokens=False) == "</think>"


def test_rollout_is_reproducible_and_scored(bench, tiny_train_ckpt, train_data, tmp_path):
    model, engine, builder = bench
    config = GRPOConfig(str(train_data), str(tiny_train_ckpt), str(tmp_path), prompts_per_step=2, group_size=3,
                        max_new_tokens=10, seed=5)
    first, again = rollout(engine, builder, config, step=7), rollout(engine, builder, config, step=7)
    assert first.completions == again.completions and len(first.completions) == 6
    assert all(t.startswith("<think>") for t in first.texts)
    assert not any(t.startswith("<think></think>") for t in first.texts)  # reason mode's first-token ban
    assert first.rewards.shape == first.advantages.shape == first.section_rewards.shape == (6,)
    assert np.all((first.section_rewards >= 0) & (first.section_rewards <= 1))
    weighted = rollout(engine, builder, replace(config, section_weight=2.0), step=7)
    np.testing.assert_allclose(weighted.rewards, first.rewards + 2.0 * first.section_rewards)
    assert rollout(engine, builder, config, step=8).completions != first.completions


def test_rollout_in_both_orders_shows_each_pair_both_ways(bench, tiny_train_ckpt, train_data, tmp_path):
    model, engine, builder = bench
    config = GRPOConfig(str(train_data), str(tiny_train_ckpt), str(tmp_path), prompts_per_step=4, group_size=2,
                        max_new_tokens=4, seed=5, both_orders=True)
    rolled = rollout(engine, builder, config, step=3)
    assert len(rolled.prompts) == 4 and len(rolled.completions) == 8
    for first, second in ((0, 1), (2, 3)):  # the same pair, swapped: same tokens, images and label exchanged
        a, b = rolled.prompts[first], rolled.prompts[second]
        assert [im.content_hash for im in a.images] == [im.content_hash for im in reversed(b.images)]
        assert {rolled.labels[first], rolled.labels[second]} == {"A", "B"}
    assert [im.content_hash for im in rolled.prompts[0].images] != [im.content_hash for im in rolled.prompts[2].images]


def test_policy_step_gradients(bench, tiny_train_ckpt, train_data, tmp_path):
    model, engine, builder = bench
    config = GRPOConfig(str(train_data), str(tiny_train_ckpt), str(tmp_path), prompts_per_step=2, group_size=2,
                        max_new_tokens=6, micro_batch=3)
    rolled = rollout(engine, builder, config, step=0)
    rolled.advantages = np.array([1.0, -1.0, 0.5, -0.5])
    reference = load_trainable(tiny_train_ckpt).eval()
    model.zero_grad(set_to_none=True)
    metrics = policy_step(model, reference, engine, rolled, config)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().max()) > 0 for g in grads)
    assert metrics["kl"] == pytest.approx(0, abs=1e-6)  # policy == reference before any update
    model.zero_grad(set_to_none=True)


def test_update_rows_keeps_only_groups_whose_rewards_differ(bench, tiny_train_ckpt, train_data, tmp_path):
    model, engine, builder = bench
    config = GRPOConfig(str(train_data), str(tiny_train_ckpt), str(tmp_path), prompts_per_step=3, group_size=2,
                        max_new_tokens=4)
    rolled = rollout(engine, builder, config, step=0)
    rolled.rewards = np.array([2.0, 2.0, 1.0, 2.0, 0.0, 0.0])  # groups: uniform, informative, uniform
    assert update_rows(rolled, 2, skip_uniform_groups=False) == [0, 1, 2, 3, 4, 5]
    assert update_rows(rolled, 2, skip_uniform_groups=True) == [2, 3]
    rolled.rewards = np.ones(6)
    assert update_rows(rolled, 2, skip_uniform_groups=True) == []


def test_policy_step_skipping_uniform_groups_averages_over_the_informative_ones(bench, tiny_train_ckpt, train_data,
                                                                               tmp_path):
    model, engine, builder = bench
    config = GRPOConfig(str(train_data), str(tiny_train_ckpt), str(tmp_path), prompts_per_step=2, group_size=2,
                        max_new_tokens=6, skip_uniform_groups=True)
    rolled = rollout(engine, builder, config, step=0)
    rolled.rewards = np.array([1.0, 0.0, 2.0, 2.0])  # the second group has nothing to prefer
    rolled.advantages = group_advantages(rolled.rewards, 2)
    reference = load_trainable(tiny_train_ckpt).eval()

    def grads_of(rolled_in, cfg):
        model.zero_grad(set_to_none=True)
        metrics = policy_step(model, reference, engine, rolled_in, cfg)
        grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        return metrics, grads

    metrics, skipped = grads_of(rolled, config)
    assert metrics["updated"] == pytest.approx(0.5)
    # The same update as a rollout holding only the informative group (mean over its 2 completions, not over 4).
    only = replace(rolled, prompts=rolled.prompts[:1], labels=rolled.labels[:1], completions=rolled.completions[:2],
                   rewards=rolled.rewards[:2], advantages=rolled.advantages[:2])
    _, expected = grads_of(only, replace(config, skip_uniform_groups=False))
    assert any(g is not None and float(g.abs().max()) > 0 for g in skipped)
    for got, want in zip(skipped, expected):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    rolled.rewards = np.ones(4)  # nothing informative: no gradient at all
    metrics, none = grads_of(rolled, config)
    assert metrics["updated"] == 0 and all(g is None for g in none)


def test_run_grpo_steps_and_writes_a_checkpoint(tiny_train_ckpt, train_data, tmp_path):
    config = GRPOConfig(str(train_data), str(tiny_train_ckpt), str(tmp_path / "grpo"), steps=2, prompts_per_step=2,
                        group_size=2, max_new_tokens=8, save_every=1, lr=1e-3)
    metrics = run_grpo(config, progress=False)
    assert {"reward", "format", "accuracy", "loss", "kl", "grad_norm", "completion_tokens"} <= set(metrics)
    log = [json.loads(line) for line in (tmp_path / "grpo_state" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    Engine(tmp_path / "grpo")
    assert run_grpo(config, resume=True, progress=False) == {}  # already at the last step: nothing to do
    with pytest.raises(InvalidInputError, match="group_size"):
        run_grpo(replace(config, group_size=1), progress=False)
    with pytest.raises(InvalidInputError, match="no checkpoint to start from"):
        run_grpo(replace(config, init_dir=str(tmp_path / "missing"), out_dir=str(tmp_path / "other")), progress=False)
    for bad in (-1.0, float("nan")):
        with pytest.raises(InvalidInputError, match="section_weight"):
            run_grpo(replace(config, section_weight=bad), progress=False)
