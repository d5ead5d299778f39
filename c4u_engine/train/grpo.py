"""GRPO after SFT (DeepSeekMath's Group Relative Policy Optimization, one policy update per rollout).

Each step: draw P training pairs (and a random order for each; with both_orders, P/2 pairs each in both orders),
build the engine's reason-mode prompt (prompt + "<think>"), sample G completions per prompt at `temperature` with
the engine's batched KV-cached `decode` (one prefill per prompt, its KV repeated G times), score them (rewards.py:
format + correctness, + section_weight x the protocol sections written as the reference writes them), normalise
rewards within each group into advantages, and minimise

    mean over completions of  mean over its tokens of  -( min(r_t A, clip(r_t, 1 +- eps) A) - beta * KL_t )

with r_t = pi(o_t) / pi_old(o_t) (1 here, but its gradient is the policy gradient) and KL_t the k3 estimator
exp(ref - logp) - (ref - logp) - 1 against the frozen SFT model. Log-probabilities use logits / temperature, the
distribution the completions were sampled from. Rollouts and sampling seeds derive from (seed, step): resumable.

skip_uniform_groups (DAPO's dynamic sampling, simplified): a group whose completions all earned the same reward has
advantage 0, so it adds only the KL term; once the policy is good, that is most groups. Dropping them from the
update (the mean then runs over the informative completions) spends the backward passes where there is signal, so
a step can afford more prompts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from c4u_engine.data.creative_pair import load_pairs
from c4u_engine.engine.answer import empty_thinking_ids
from c4u_engine.engine.generation import decode
from c4u_engine.engine.session import ImageJob, ModelSession, Prompt
from c4u_engine.engine.prompt import load_prompt_template
from c4u_engine.engine.sampling import Sampler, SamplingParams
from c4u_engine.errors import InvalidInputError
from c4u_engine.models.checkpoint import load_model
from c4u_engine.models.rope import text_position_ids
from c4u_engine.train.batching import IGNORE, Example, ExampleBuilder, collate, orient
from c4u_engine.train.checkpoint_writer import fork_checkpoint, save_weights
from c4u_engine.train.engine_bridge import training_session
from c4u_engine.train.forward import batch_logits, token_logprobs
from c4u_engine.train.rewards import correctness_reward, format_reward, group_advantages, section_reward
from c4u_engine.train.train_state import (
    Progress, RunConfig, append_log, check_fresh_start, cosine_lr, load_latest_state, make_optimizer, save_state,
    trim_log,
)

_RUN_KEYS = ("init_dir", "split", "steps", "prompts_per_step", "group_size", "temperature", "max_new_tokens", "lr",
             "warmup_steps", "weight_decay", "beta", "clip_eps", "format_weight", "correct_weight", "section_weight",
             "grad_clip", "seed", "max_pairs", "both_orders", "skip_uniform_groups")


@dataclass(frozen=True)
class GRPOConfig(RunConfig):
    RUN_KEYS: ClassVar[tuple[str, ...]] = _RUN_KEYS

    data_dir: str
    init_dir: str  # the SFT checkpoint: the starting policy and the frozen KL reference
    out_dir: str  # the resulting checkpoint (assets copied from init_dir)
    state_dir: str | None = None  # default: out_dir + "_state"
    split: str = "train"
    steps: int = 100
    prompts_per_step: int = 4
    group_size: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 256  # the engine's default; the generator's reasonings take <= ~210 tokens
    lr: float = 1e-5
    warmup_steps: int = 5  # then constant
    weight_decay: float = 0.0
    beta: float = 0.04  # KL penalty weight
    clip_eps: float = 0.2
    format_weight: float = 1.0
    correct_weight: float = 1.0
    section_weight: float = 0.0  # process reward: protocol sections matching the reference reasoning (rewards.py)
    grad_clip: float = 1.0
    micro_batch: int = 16  # completions per forward/backward (gradients accumulate over the step)
    save_every: int = 10
    keep_states: int = 2
    seed: int = 0
    max_pairs: int | None = None
    both_orders: bool = False  # prompts come in pairs: one pair shown in both orders (prompts_per_step // 2 pairs)
    skip_uniform_groups: bool = False  # update only on groups whose rewards differ (see the module docstring)
    image_chunk: int = 16
    device: str = "cpu"


@dataclass
class Rollout:
    """P prompts and G sampled completions each, laid out group after group (row = prompt * G + g)."""

    prompts: list[Prompt]
    labels: list[str]
    completions: list[list[int]]
    texts: list[str]
    finished_by: list[str]
    rewards: np.ndarray
    format_rewards: np.ndarray
    correct_rewards: np.ndarray
    section_rewards: np.ndarray
    advantages: np.ndarray


def sample_completions(engine: ModelSession, prompts: list[Prompt], group_size: int, max_new_tokens: int,
                       sampling: SamplingParams, suppress_first: tuple[int, ...] = ()
                       ) -> tuple[list[list[int]], list[str]]:
    """G completions per prompt with the engine's KV-cached decode: one right-padded prefill of the P prompts, each
    row's KV repeated G times, then all P*G rows decode together until </answer>, an eos token or the length cap.
    suppress_first: tokens banned as the first new token (reason mode's ban on closing the thinking at once)."""
    runner, tok = engine.runner, engine.tokenizer
    embeds = [e for e, _ in engine.encode([ImageJob(im, None, use_cache=False) for p in prompts for im in p.images])]
    lens = [len(p.ids) for p in prompts]
    width = max(lens)
    ids = np.full((len(prompts), width), tok.im_end_id, np.int64)  # padding: masked out
    pos = np.zeros((3, len(prompts), width), np.int64)
    mask = np.zeros((len(prompts), width), bool)
    for r, p in enumerate(prompts):
        ids[r, : lens[r]], pos[:, r, : lens[r]], mask[r, : lens[r]] = p.ids, p.positions, True
    logits, kv = runner.forward(runner.embed(ids, embeds), pos, None, mask, np.array([[n - 1] for n in lens]))
    rows = np.repeat(np.arange(len(prompts)), group_size)
    next_pos = np.array([p.next_position for p in prompts], np.int64)[rows]

    def stop(row: int, generated: list[int]) -> bool:
        return "</answer>" in tok.decode(generated[-6:])

    result = decode(runner, runner.kv_select(kv, rows.tolist()), mask[rows], logits[rows, 0], next_pos,
                    max_new_tokens=max_new_tokens, sampler=Sampler(sampling), eos_ids=tok.eos_token_ids, stop=stop,
                    suppress_first=suppress_first)
    # Vision tokens have no place in an answer (and an <|image_pad|> would claim an image embedding in the
    # training forward): a completion is cut before the first one, which also costs it its format reward.
    vision_ids = {tok.image_pad_id, tok.vision_start_id, tok.vision_end_id, engine.config.video_token_id}
    tokens, finished = [], []
    for completion, reason in zip(result.tokens, result.finished_by):
        cut = next((i for i, t in enumerate(completion) if t in vision_ids), None)
        tokens.append(completion if cut is None else completion[:cut])
        finished.append(reason if cut is None else "vision_token")
    return tokens, finished


def rollout(engine: ModelSession, builder: ExampleBuilder, config: GRPOConfig, step: int) -> Rollout:
    """Draw this step's prompts, sample and score their completions."""
    rng = np.random.default_rng([config.seed, step])
    n = len(builder.records)
    if config.both_orders:  # each drawn pair in both orders: the group advantages then reward order-robust answers
        drawn = rng.choice(n, size=min(max(1, config.prompts_per_step // 2), n), replace=False)
        picks, swaps = np.repeat(drawn, 2), np.tile([False, True], len(drawn))
    else:
        picks = rng.choice(n, size=min(config.prompts_per_step, n), replace=False)
        swaps = rng.random(len(picks)) < 0.5
    reason_prefix = builder.template.reason_prefix
    pairs = [orient(builder.records[int(i)], bool(s)) for i, s in zip(picks, swaps)]
    prompts = [builder.prompt(pair, reason_prefix) for pair in pairs]
    sampling = SamplingParams(do_sample=True, temperature=config.temperature, seed=int(rng.integers(2**31)))
    with torch.no_grad():
        # Rollouts are sampled as reason mode serves them: the empty-thinking shortcut is banned as the first token.
        completions, finished = sample_completions(engine, prompts, config.group_size, config.max_new_tokens, sampling,
                                                   empty_thinking_ids(engine.tokenizer, reason_prefix))
    labels = [pair.label for pair in pairs]
    texts = [reason_prefix + engine.tokenizer.decode(c, skip_special_tokens=True) for c in completions]
    row_labels = [labels[r // config.group_size] for r in range(len(texts))]
    fmt = np.array([format_reward(t) for t in texts])
    correct = np.array([correctness_reward(t, y) for t, y in zip(texts, row_labels)])
    sections = np.array([section_reward(t, pairs[r // config.group_size].reasoning) for r, t in enumerate(texts)])
    rewards = config.format_weight * fmt + config.correct_weight * correct + config.section_weight * sections
    return Rollout(prompts, labels, completions, texts, finished, rewards, fmt, correct, sections,
                   group_advantages(rewards, config.group_size))


def grpo_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, beta: float, clip_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence GRPO loss [B] (token mean of the clipped surrogate minus beta * k3 KL) and per-sequence KL [B].

    logp, old_logp, ref_logp, mask: [B, K]; advantages: [B]."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    log_ref_ratio = ref_logp - logp
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    mask = mask.to(logp.dtype)
    counts = mask.sum(dim=1).clamp(min=1)
    loss = (-(surrogate - beta * kl) * mask).sum(dim=1) / counts
    return loss, (kl * mask).sum(dim=1) / counts


def _row_example(prompt: Prompt, completion: list[int]) -> Example:
    tail = text_position_ids(prompt.next_position, len(completion))[:, 0]
    return Example(np.concatenate([prompt.ids, np.asarray(completion, np.int64)]),
                   np.concatenate([prompt.positions, tail], axis=1), len(prompt.ids), prompt.images)


def update_rows(rolled: Rollout, group_size: int, skip_uniform_groups: bool) -> list[int]:
    """The completions the policy update runs on: all, or only those of groups whose rewards differ."""
    rows = range(len(rolled.completions))
    if not skip_uniform_groups:
        return list(rows)
    groups = rolled.rewards.reshape(-1, group_size)
    informative = groups.max(axis=1) > groups.min(axis=1)
    return [r for r in rows if informative[r // group_size]]


def policy_step(policy: torch.nn.Module, reference: torch.nn.Module, engine: ModelSession, rolled: Rollout,
                config: GRPOConfig) -> dict[str, float]:
    """Accumulate the GRPO gradient of one rollout into policy's .grad (micro-batched); return loss and KL means
    over the completions updated on (the fraction of all completions is "updated"; 0 leaves .grad untouched)."""
    kept = update_rows(rolled, config.group_size, config.skip_uniform_groups)
    total = len(kept)
    loss_sum, kl_sum = 0.0, 0.0
    for lo in range(0, total, config.micro_batch):
        rows = kept[lo: lo + config.micro_batch]
        examples = [_row_example(rolled.prompts[r // config.group_size], rolled.completions[r]) for r in rows]
        batch = collate(examples, engine, engine.tokenizer.im_end_id)
        logp = token_logprobs(batch_logits(policy, batch, config.image_chunk), batch.labels, config.temperature)
        with torch.no_grad():
            ref_logp = token_logprobs(batch_logits(reference, batch, config.image_chunk), batch.labels,
                                      config.temperature)
        adv = torch.as_tensor(rolled.advantages[rows], dtype=logp.dtype, device=logp.device)
        mask = (batch.labels != IGNORE).to(logp.device)
        loss, kl = grpo_token_loss(logp, logp.detach(), ref_logp, adv, mask, config.beta, config.clip_eps)
        (loss.sum() / total).backward()
        loss_sum += float(loss.detach().sum())
        kl_sum += float(kl.detach().sum())
    done = max(total, 1)
    return {"loss": loss_sum / done, "kl": kl_sum / done, "updated": total / len(rolled.completions)}


def run_grpo(config: GRPOConfig, *, resume: bool = False, progress: bool = True) -> dict[str, float]:
    """Run GRPO and leave the final weights in config.out_dir; returns the last step's metrics."""
    if config.group_size < 2:
        raise InvalidInputError(f"group_size={config.group_size}; GRPO needs >= 2 completions per prompt")
    weights = {"format_weight": config.format_weight, "correct_weight": config.correct_weight,
               "section_weight": config.section_weight}
    if not all(math.isfinite(w) and w >= 0 for w in weights.values()):
        raise InvalidInputError(f"reward weights {weights}: each must be a finite number >= 0")
    records = load_pairs(config.data_dir, config.split)
    if config.max_pairs is not None:
        records = records[: config.max_pairs]
    if not records:
        raise InvalidInputError(f"{config.data_dir}: no pairs in split {config.split!r}")
    if not resume:
        check_fresh_start(config.states)
    policy = fork_checkpoint(config.init_dir, config.out_dir, config.device)  # init_dir: the SFT checkpoint
    reference = load_model(config.init_dir, device=config.device, dtype=torch.float32)
    engine = training_session(config.out_dir, policy)
    builder = ExampleBuilder(engine, load_prompt_template(config.out_dir), records)
    optimizer = make_optimizer(policy, config.lr, config.weight_decay)
    settings = config.run_settings()
    start = load_latest_state(config.states, policy, optimizer, settings) if resume else 0
    if start:
        save_weights(policy, config.out_dir)  # out_dir matches the resumed state, not init_dir
    config.states.mkdir(parents=True, exist_ok=True)
    log_path = config.states / "log.jsonl"
    trim_log(log_path, start)
    bar = Progress(config.steps, start, "grpo", enabled=progress, every=1)
    metrics: dict[str, float] = {}
    try:
        for step in range(start, config.steps):
            t0 = time.perf_counter()
            lr = cosine_lr(step, config.lr, config.steps, config.warmup_steps, min_ratio=1.0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            policy.eval()  # no dropout anywhere; eval only documents that sampling is not training
            rolled = rollout(engine, builder, config, step)
            policy.train()
            optimizer.zero_grad(set_to_none=True)
            losses = policy_step(policy, reference, engine, rolled, config)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip))
            optimizer.step()
            metrics = {"reward": float(rolled.rewards.mean()), "format": float(rolled.format_rewards.mean()),
                       "accuracy": float(rolled.correct_rewards.mean()),
                       "sections": float(rolled.section_rewards.mean()), **losses, "grad_norm": grad_norm,
                       "completion_tokens": float(np.mean([len(c) for c in rolled.completions])), "lr": lr}
            append_log(log_path, {"step": step + 1, **metrics, "seconds": round(time.perf_counter() - t0, 3)})
            bar.update({k: metrics[k] for k in ("reward", "accuracy", "kl", "updated")})
            if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
                save_state(config.states, step + 1, policy, optimizer, settings, config.keep_states)
                save_weights(policy, config.out_dir)
    finally:
        bar.close()
    return metrics
