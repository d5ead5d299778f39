"""CoT-SFT: supervised training on comparison prompts with chain-of-thought targets, in both orders.

Each pair gives four sequences: (A, B) and (B, A) orders, each as a chain of thought ("reason" form) and as a direct
answer after an empty think block ("fast" form); with forms=(..., "perceive") also one description per image (an
auxiliary task for synthetic data); see batching.py. Loss: cross-entropy on the target tokens only, averaged per
sequence, then over the batch (each form of a batch runs as its own forward so short sequences are not padded).
With vision_aux_weight > 0 (synthetic data only), the attribute heads of perception.py also classify every image of
the batch from the same vision-tower output, and their loss, times that weight, joins the SFT loss: the vision tower
learns the attributes while the decoder keeps reading its tokens (perception training alone moves them away).
AdamW (no decay on biases and norms), linear warm-up then cosine decay, gradient-norm clipping. Every `save_every`
steps a resumable state goes to state_dir and the weights to out_dir, so out_dir is always a loadable checkpoint.
Deterministic from the seed: initial weights, data order (a permutation per epoch drawn from (seed, epoch)) and hence
every step; resuming reproduces the uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from c4u_engine.data.creative_pair import load_pairs
from c4u_engine.engine.prompt import load_prompt_template
from c4u_engine.errors import InvalidInputError
from c4u_engine.train.batching import FORMS, ExampleBuilder, collate, make_items
from c4u_engine.train.checkpoint_writer import fork_checkpoint, save_weights, write_assets
from c4u_engine.train.engine_bridge import training_session
from c4u_engine.train.forward import encode_images, language_logits, sequence_mean_nll
from c4u_engine.train.model_spec import ModelSpec, build_model, load_trainable
from c4u_engine.train.perception import WithHeads, attribute_loss, item_image_classes, new_heads, pad_tokens
from c4u_engine.train.train_state import (
    ItemOrder, Progress, RunConfig, append_log, check_fresh_start, cosine_lr, load_latest_state, make_optimizer,
    save_state, trim_log,
)

# Settings that define the run: a resumed run must have the same ones.
_RUN_KEYS = ("split", "epochs", "max_steps", "batch_size", "lr", "min_lr_ratio", "warmup_steps", "weight_decay",
             "grad_clip", "seed", "forms", "max_pairs", "vision_aux_weight")


@dataclass(frozen=True)
class SFTConfig(RunConfig):
    RUN_KEYS: ClassVar[tuple[str, ...]] = _RUN_KEYS

    data_dir: str  # a CreativePair directory (train.jsonl, ...)
    out_dir: str  # the checkpoint directory: created from tokenizer_file + spec, or fine-tuned when it exists
    tokenizer_file: str | None = None  # tokenizer.json for a new checkpoint
    init_dir: str | None = None  # or: start a new out_dir from this checkpoint (e.g. more epochs after a run)
    spec: ModelSpec = field(default_factory=ModelSpec)
    state_dir: str | None = None  # default: out_dir + "_state"
    split: str = "train"
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 16
    lr: float = 5e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    save_every: int = 250
    keep_states: int = 2
    seed: int = 0
    forms: tuple[str, ...] = ("reason", "fast")
    max_pairs: int | None = None  # use only the first N pairs (smoke runs)
    vision_aux_weight: float = 0.0  # > 0: the attribute loss of perception.py on the batch's images (see above)
    image_chunk: int = 16  # images per vision-tower call
    device: str = "cpu"  # "cuda" trains on a GPU (float32)


@dataclass(frozen=True)
class SFTResult:
    out_dir: Path
    steps: int
    last_loss: float
    seconds_per_step: float


def prepare_checkpoint(config: SFTConfig) -> torch.nn.Module:
    """The model to train: out_dir's weights when it holds a checkpoint; else init_dir's, copied into out_dir; else
    a new checkpoint written from the tokenizer and spec, with weights initialised from the seed."""
    out = Path(config.out_dir)
    if (out / "config.json").is_file():
        return load_trainable(out, config.device)
    if config.init_dir:
        return fork_checkpoint(config.init_dir, out, config.device)
    if not config.tokenizer_file:
        raise InvalidInputError(f"{out} holds no checkpoint; give tokenizer_file (--tokenizer) or init_dir (--init) "
                                "to create one")
    from tokenizers import Tokenizer

    model_config = write_assets(out, Tokenizer.from_file(str(config.tokenizer_file)), config.spec)
    model = build_model(model_config, config.seed, config.spec.init_std)
    save_weights(model, out)
    return model.to(config.device)


def total_steps(config: SFTConfig, n_items: int) -> int:
    if config.max_steps is not None:
        return config.max_steps
    return max(1, math.ceil(config.epochs * n_items / config.batch_size))


def run_sft(config: SFTConfig, *, resume: bool = False, progress: bool = True) -> SFTResult:
    """Train (or resume training) and leave the final weights in config.out_dir."""
    if config.batch_size < 1:
        raise InvalidInputError(f"batch_size={config.batch_size}; expected >= 1")
    if not config.vision_aux_weight >= 0:  # also refuses NaN
        raise InvalidInputError(f"vision_aux_weight={config.vision_aux_weight}; expected >= 0 (0: off)")
    records = load_pairs(config.data_dir, config.split)
    if config.max_pairs is not None:
        records = records[: config.max_pairs]
    if not records:
        raise InvalidInputError(f"{config.data_dir}: no pairs in split {config.split!r}")
    if not resume:
        check_fresh_start(config.states)
    torch.manual_seed(config.seed)
    model = prepare_checkpoint(config)
    engine = training_session(config.out_dir, model)
    builder = ExampleBuilder(engine, load_prompt_template(config.out_dir), records)
    items = make_items(len(records), config.forms)
    order = ItemOrder(items, config.batch_size, config.seed)
    heads = None
    trained: torch.nn.Module = model
    if config.vision_aux_weight > 0:
        torch.manual_seed(config.seed)
        heads = new_heads(model.config.text.hidden_size).to(config.device)
        trained = WithHeads(model, heads)
    optimizer = make_optimizer(trained, config.lr, config.weight_decay)
    settings = config.run_settings()
    start = load_latest_state(config.states, trained, optimizer, settings) if resume else 0
    steps = total_steps(config, len(items))
    log_path = config.states / "log.jsonl"
    config.states.mkdir(parents=True, exist_ok=True)
    trim_log(log_path, start)
    pad_id = engine.tokenizer.im_end_id
    bar = Progress(steps, start, "sft", enabled=progress)
    model.train()
    loss_value, started = float("nan"), time.perf_counter()
    try:
        for step in range(start, steps):
            t0 = time.perf_counter()
            lr = cosine_lr(step, config.lr, steps, config.warmup_steps, config.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss_value, aux_value, n_tokens = 0.0, 0.0, 0
            items = order.batch(step)
            for form in FORMS:  # one forward per form: short sequences are not padded to a chain of thought
                part = [item for item in items if item.form == form]
                if not part:
                    continue
                batch = collate([builder.example(item) for item in part], engine, pad_id)
                embeds = encode_images(model, batch.pixel_values.to(config.device), batch.grid_thw, config.image_chunk)
                logits = language_logits(model, batch.input_ids, batch.attention_mask, batch.position_ids, embeds,
                                         batch.logits_index)
                loss = sequence_mean_nll(logits, batch.labels)
                if heads is not None:
                    classes = [c for item in part for c in item_image_classes(records[item.pair], item.swapped, form)]
                    aux, _ = attribute_loss(heads(*pad_tokens(embeds)), torch.tensor(classes))
                    aux_value += float(aux.detach()) * len(part) / len(items)
                    loss = loss + config.vision_aux_weight * aux
                (loss * (len(part) / len(items))).backward()
                loss_value += float(loss.detach()) * len(part) / len(items)
                n_tokens += batch.n_target_tokens
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trained.parameters(), config.grad_clip))
            optimizer.step()
            metrics = {"loss": loss_value, "lr": lr, "grad_norm": grad_norm}
            if heads is not None:
                metrics["vision_aux_loss"] = aux_value
            append_log(log_path, {"step": step + 1, **metrics, "tokens": n_tokens,
                                  "seconds": round(time.perf_counter() - t0, 4)})
            bar.update({"loss": loss_value, "lr": lr})
            if (step + 1) % config.save_every == 0 or step + 1 == steps:
                save_state(config.states, step + 1, trained, optimizer, settings, config.keep_states)
                save_weights(model, config.out_dir)
    finally:
        bar.close()
    done = max(1, steps - start)
    return SFTResult(Path(config.out_dir), steps, loss_value, (time.perf_counter() - started) / done)
