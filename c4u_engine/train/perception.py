"""Perception training: the vision tower learns, from images alone, the creative attributes the appeal reads.

Why: probing the chain of thought of the CoT-SFT + GRPO model on test pairs showed its answers limited by what it
sees, not by how it reasons: the background (kind and colour harmony), the props count, the product size and the
text clutter were described wrongly in 40-75% of comparisons, while every comparison whose section lines were all
right was answered right (MODEL_CARD.md). Learning those attributes through the language model is slow on a CPU
(a described image costs a ~120-token sequence through the decoder); here each image costs only the vision tower.

What: per attribute (ATTRIBUTES), a learned query attends over the image's merged vision tokens (the very tokens the
language model reads) and a linear layer classifies the pooled vector; the loss is the mean cross-entropy over the
attributes. Only the vision tower (patch embedding, blocks, merger) and the heads train; the heads are dropped at
the end, so the checkpoint keeps the Qwen2.5-VL architecture, and its decoder weights are untouched. Because the
merged tokens move, CoT-SFT must follow this stage (the recipe runs it before SFT, or an SFT continuation after it).

Data: every distinct image of the split whose record carries the generator's spec (meta.spec_a / meta.spec_b), so
synthetic data only. Deterministic from the seed (head initialisation, per-epoch image order); resumable like SFT.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from c4u_engine.data.appeal import is_harmonious, size_class
from c4u_engine.data.creative_pair import load_pairs
from c4u_engine.data.creatives import BACKGROUNDS, LAYOUTS, CreativeSpec
from c4u_engine.errors import InvalidInputError
from c4u_engine.ops.preprocess import preprocess
from c4u_engine.train.checkpoint_writer import fork_checkpoint, save_weights
from c4u_engine.train.engine_bridge import training_session
from c4u_engine.train.forward import encode_images
from c4u_engine.train.model_spec import load_trainable
from c4u_engine.train.train_state import (
    ItemOrder, Progress, RunConfig, append_log, check_fresh_start, cosine_lr, load_latest_state, make_optimizer,
    save_state, trim_log,
)

_SIZES = ("small", "medium", "large")
# name -> (number of classes, the class of a spec); the attributes describe_section and the appeal read.
ATTRIBUTES: dict[str, tuple[int, Callable[[CreativeSpec], int]]] = {
    "price_badge": (2, lambda s: int(bool(s.price_tag))),
    "selling_point": (2, lambda s: int(bool(s.selling_point))),
    "call_to_action": (2, lambda s: int(s.call_to_action)),
    "clutter": (3, lambda s: s.clutter),
    "clean_look": (2, lambda s: int(s.clean_look)),
    "model": (2, lambda s: int(s.model)),
    "props": (4, lambda s: s.props),
    "layout": (4, lambda s: LAYOUTS.index(s.layout)),
    "cropped": (2, lambda s: int(s.crop != "none")),
    "size": (3, lambda s: _SIZES.index(size_class(s.product_scale))),
    "background": (5, lambda s: BACKGROUNDS.index(s.background)),
    "harmony": (2, lambda s: int(is_harmonious(s))),
}

_RUN_KEYS = ("split", "steps", "batch_size", "lr", "warmup_steps", "weight_decay", "grad_clip", "seed", "max_pairs")


@dataclass(frozen=True)
class PerceptionConfig(RunConfig):
    RUN_KEYS: ClassVar[tuple[str, ...]] = _RUN_KEYS

    data_dir: str  # a synthetic CreativePair directory (records with meta.spec_a / meta.spec_b)
    init_dir: str  # the checkpoint whose vision tower trains (copied into out_dir first)
    out_dir: str
    state_dir: str | None = None  # default: out_dir + "_state"
    split: str = "train"
    steps: int = 1500
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    save_every: int = 250
    keep_states: int = 2
    seed: int = 0
    max_pairs: int | None = None
    val_split: str | None = "val"  # held-out images whose attribute accuracy is reported at the end (None: none)
    val_images: int = 1000  # 0: no held-out report
    image_chunk: int = 16
    device: str = "cpu"


class AttributeHeads(nn.Module):
    """Per attribute: attention pooling with a learned query over an image's tokens, then a linear classifier."""

    def __init__(self, hidden: int, classes: dict[str, int]) -> None:
        super().__init__()
        self.names = list(classes)
        self.queries = nn.Parameter(torch.randn(len(self.names), hidden) * hidden ** -0.5)
        self.norm = nn.LayerNorm(hidden)
        self.classifiers = nn.ModuleList(nn.Linear(hidden, classes[n]) for n in self.names)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens [N, T, H], mask [N, T] bool (True = a real token) -> {attribute: logits [N, classes]}."""
        x = self.norm(tokens)
        scores = torch.einsum("ah,nth->nat", self.queries, x) * x.shape[-1] ** -0.5
        weights = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(dim=-1)
        pooled = torch.einsum("nat,nth->nah", weights, x)
        return {name: head(pooled[:, i]) for i, (name, head) in enumerate(zip(self.names, self.classifiers))}


def labelled_images(data_dir: str, split: str, max_pairs: int | None = None) -> tuple[list[str], np.ndarray]:
    """Every distinct image of the split with its attribute classes [n_images, len(ATTRIBUTES)] (int64)."""
    paths, labels = image_labels(load_pairs(data_dir, split)[:max_pairs])
    if not paths:
        raise InvalidInputError(f"{data_dir}: no pairs in split {split!r}")
    return paths, labels


def image_labels(records) -> tuple[list[str], np.ndarray]:
    """The distinct images of pair records with their attribute classes (none for no records)."""
    seen: dict[str, list[int]] = {}
    for record in records:
        for key, image in (("spec_a", record.image_a), ("spec_b", record.image_b)):
            if str(image) not in seen:
                seen[str(image)] = spec_classes(record.meta, key, str(record.source))
    return list(seen), np.asarray(list(seen.values()), np.int64).reshape(len(seen), len(ATTRIBUTES))


def spec_classes(meta: dict | None, key: str, source: str = "") -> list[int]:
    """The attribute classes (ATTRIBUTES order) of the generator spec meta[key] ("spec_a" / "spec_b")."""
    if not meta or key not in meta:
        raise InvalidInputError(f"{source}: perception training needs the generator's meta.{key} (synthetic pairs "
                                "only)")
    spec = CreativeSpec.from_dict(meta[key])
    return [fn(spec) for _, fn in ATTRIBUTES.values()]


def item_image_classes(record, swapped: bool, form: str) -> list[list[int]]:
    """The classes of the images an SFT item shows, in the order it shows them (batching.ExampleBuilder.example):
    perceive shows image_a (image_b when swapped); reason and fast show A then B (B then A when swapped)."""
    keys = ["spec_b" if swapped else "spec_a"] if form == "perceive" else (
        ["spec_b", "spec_a"] if swapped else ["spec_a", "spec_b"])
    return [spec_classes(record.meta, key, str(record.source)) for key in keys]


def new_heads(hidden: int) -> AttributeHeads:
    """Heads for every attribute of ATTRIBUTES."""
    return AttributeHeads(hidden, {n: c for n, (c, _) in ATTRIBUTES.items()})


def image_tokens(model: nn.Module, engine, paths: list[str], device: str, chunk: int = 16) -> list[torch.Tensor]:
    """The merged vision tokens [T_i, H] of each image file, as the engine loads and preprocesses it."""
    images = engine.load_images(paths)
    pixel_values, grid = preprocess([im.pixels for im in images], engine.preprocess_params)
    return encode_images(model, torch.from_numpy(pixel_values).to(device), grid, chunk)


def pad_tokens(per_image: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image token tensors [T_i, H] -> padded [N, T, H] and its mask [N, T]."""
    width = max(t.shape[0] for t in per_image)
    tokens = per_image[0].new_zeros(len(per_image), width, per_image[0].shape[1])
    mask = torch.zeros(len(per_image), width, dtype=torch.bool, device=tokens.device)
    for i, t in enumerate(per_image):
        tokens[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return tokens, mask


def attribute_loss(logits: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy over the attributes, and each attribute's accuracy on the batch."""
    losses, accuracy = [], {}
    for i, (name, out) in enumerate(logits.items()):
        target = labels[:, i].to(out.device)
        losses.append(F.cross_entropy(out, target))
        accuracy[name] = float((out.argmax(-1) == target).float().mean())
    return torch.stack(losses).mean(), accuracy


class WithHeads(nn.Module):
    """A trained module with the attribute heads beside it: what a run's optimizer and states cover."""

    def __init__(self, body: nn.Module, heads: AttributeHeads) -> None:
        super().__init__()
        self.body, self.heads = body, heads


def run_perception(config: PerceptionConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) the vision tower on the attributes; the final weights go to config.out_dir."""
    if config.batch_size < 1 or config.steps < 1 or config.val_images < 0:
        raise InvalidInputError(f"batch_size={config.batch_size}, steps={config.steps}, "
                                f"val_images={config.val_images}; expected batch_size and steps >= 1, val_images >= 0")
    paths, labels = labelled_images(config.data_dir, config.split, config.max_pairs)
    if not resume:
        check_fresh_start(config.states)
    out = Path(config.out_dir)
    if (out / "config.json").is_file():
        model = load_trainable(out, config.device)
    else:
        model = fork_checkpoint(config.init_dir, out, config.device)
    for param in model.language.parameters():
        param.requires_grad_(False)
    torch.manual_seed(config.seed)
    heads = new_heads(model.config.text.hidden_size)
    trainable = WithHeads(model.visual, heads.to(config.device))
    engine = training_session(out, model)
    optimizer = make_optimizer(trainable, config.lr, config.weight_decay)
    settings = config.run_settings()
    start = load_latest_state(config.states, trainable, optimizer, settings) if resume else 0
    log_path = config.states / "log.jsonl"
    config.states.mkdir(parents=True, exist_ok=True)
    trim_log(log_path, start)
    bar = Progress(config.steps, start, "perception", enabled=progress)
    order = ItemOrder(range(len(paths)), config.batch_size, config.seed)
    model.train()
    loss_value, accuracy, started = float("nan"), {}, time.perf_counter()
    try:
        for step in range(start, config.steps):
            t0 = time.perf_counter()
            lr = cosine_lr(step, config.lr, config.steps, config.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pick = order.batch(step)
            tokens = image_tokens(model, engine, [paths[i] for i in pick], config.device, config.image_chunk)
            loss, accuracy = attribute_loss(heads(*pad_tokens(tokens)), torch.from_numpy(labels[pick]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable.parameters(), config.grad_clip))
            optimizer.step()
            loss_value = float(loss.detach())
            append_log(log_path, {"step": step + 1, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                                  "accuracy": {k: round(v, 4) for k, v in accuracy.items()},
                                  "seconds": round(time.perf_counter() - t0, 4)})
            bar.update({"loss": loss_value, "lr": lr})
            if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
                save_state(config.states, step + 1, trainable, optimizer, settings, config.keep_states)
                save_weights(model, out)
    finally:
        bar.close()
    seconds_per_step = (time.perf_counter() - started) / max(1, config.steps - start)
    model.eval()
    held_out = {}
    # A small dataset may have no held-out pairs: then there is nothing to report, which is not an error.
    val_paths, val_labels = image_labels(load_pairs(config.data_dir, config.val_split) if config.val_split else [])
    if val_paths and config.val_images:
        n = config.val_images
        held_out = probe_accuracy(model, heads, engine, val_paths[:n], val_labels[:n], config.batch_size,
                                  config.image_chunk)
        append_log(log_path, {"step": config.steps, "val_split": config.val_split, "val_images": len(val_paths[:n]),
                              "val_accuracy": {k: round(v, 4) for k, v in held_out.items()}})
    return {"out_dir": str(out), "steps": config.steps, "images": len(paths), "last_loss": loss_value,
            "last_accuracy": accuracy, "val_accuracy": held_out, "seconds_per_step": seconds_per_step}


@torch.no_grad()
def probe_accuracy(model: nn.Module, heads: AttributeHeads, engine, paths: list[str], labels: np.ndarray,
                   batch_size: int = 64, chunk: int = 16) -> dict[str, float]:
    """Each attribute's accuracy of heads over the given images (evaluation mode), on the model's device."""
    device = str(next(model.parameters()).device)
    hits = np.zeros(len(ATTRIBUTES))
    for lo in range(0, len(paths), batch_size):
        logits = heads(*pad_tokens(image_tokens(model, engine, paths[lo:lo + batch_size], device, chunk)))
        target = labels[lo:lo + batch_size]
        hits += [(out.argmax(-1).cpu().numpy() == target[:, i]).sum() for i, out in enumerate(logits.values())]
    return {name: float(h / len(paths)) for name, h in zip(ATTRIBUTES, hits)}
