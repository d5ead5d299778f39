"""Training examples from CreativePair records, in both orders, and their padded batches.

An item is (pair, swapped, form). swapped shows image_b as Creative A and flips the label; the reasoning's A/B words
are swapped with it (swap_reasoning). form "reason" trains the chain of thought
`<think>{reasoning}</think><answer>{label}</answer><|im_end|>`; form "fast" trains the same answer after an empty
think block (`<think></think><answer>{label}</answer><|im_end|>`), which is what fast mode's assistant prefix
`<think></think><answer>` asks the model to continue. Form "perceive" is an auxiliary task on one image (image_a,
or image_b when swapped): "Describe this creative." answered by data.description.describe_creative of the
record's generator spec (meta["spec_a"/"spec_b"]; synthetic data only); it teaches the small vision tower the
attributes the chain of thought compares from short, cheap sequences. The prompt is ModelSession.tokenize's, ending
with the chat template's `<|im_start|>assistant\n`; the loss covers every token after it. Both serving prompts
(prompt + "<think>" for reason mode, prompt + "<think></think><answer>" for fast mode) are prefixes of these
sequences.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from c4u_engine.data.creative_pair import PairRecord
from c4u_engine.data.creatives import CreativeSpec
from c4u_engine.data.description import DESCRIBE_QUESTION, describe_creative
from c4u_engine.engine.session import ModelSession, Prompt
from c4u_engine.engine.prompt import PromptTemplate
from c4u_engine.errors import InvalidInputError
from c4u_engine.imaging import LoadedImage
from c4u_engine.ops.preprocess import preprocess
from c4u_engine.profile import Profile
from c4u_engine.train.tokenizer_training import target_text

FORMS = ("reason", "fast", "perceive")
DEFAULT_FORMS = ("reason", "fast")  # perceive is opt-in: it needs generator specs
IGNORE = -100
_LETTER = re.compile(r"\b([AB])\b")
_SWAPPED_SIDES = re.compile(r"\bB: ([^.\n]*)\. A: ([^.\n]*)\.")


def swap_reasoning(text: str) -> str:
    """The reasoning for the swapped pair: every standalone A/B exchanged, and "B: x. A: y." put back in A-first
    order. For the synthetic generator's reasoning this equals make_reasoning on the swapped specs (tested)."""
    swapped = _LETTER.sub(lambda m: "B" if m.group(1) == "A" else "A", text)
    return _SWAPPED_SIDES.sub(r"A: \2. B: \1.", swapped)


@dataclass(frozen=True)
class Item:
    pair: int  # index into the records
    swapped: bool  # image_b shown as Creative A, label flipped
    form: str  # "reason", "fast" or "perceive"


@dataclass(frozen=True)
class Oriented:
    """A pair record as shown in one order."""

    image_a: str
    image_b: str
    profile: Profile
    label: str
    reasoning: str


def orient(record: PairRecord, swapped: bool) -> Oriented:
    profile = Profile(title=record.product_title, queries=record.query)
    if not swapped:
        return Oriented(str(record.image_a), str(record.image_b), profile, record.label, record.reasoning)
    return Oriented(str(record.image_b), str(record.image_a), profile, "B" if record.label == "A" else "A",
                    swap_reasoning(record.reasoning))


def make_items(n_pairs: int, forms: Sequence[str] = DEFAULT_FORMS, both_orders: bool = True) -> list[Item]:
    """Every (pair, order, form) item, in a fixed order (shuffling is the sampler's job)."""
    bad = [f for f in forms if f not in FORMS]
    if bad or not forms:
        raise InvalidInputError(f"forms={list(forms)}; valid forms: {list(FORMS)}")
    orders = (False, True) if both_orders else (False,)
    return [Item(p, s, f) for p in range(n_pairs) for s in orders for f in forms]


@dataclass
class Example:
    """One tokenized training sequence: prompt + target, with the images it shows."""

    ids: np.ndarray  # int64 [S]
    positions: np.ndarray  # int64 [3, S]
    n_prompt: int  # the loss covers ids[n_prompt:]
    images: list[LoadedImage]


class ExampleBuilder:
    """Turns items into Examples with the engine's own tokenization and prompt template."""

    def __init__(self, engine: ModelSession, template: PromptTemplate, records: Sequence[PairRecord]) -> None:
        self.engine = engine
        self.template = template
        self.records = records

    def messages(self, pair: Oriented) -> list[dict]:
        return self.template.messages(pair.profile, pair.image_a, pair.image_b)

    def prompt(self, pair: Oriented, assistant_prefix: str = "") -> Prompt:
        """The engine's tokenized prompt for this oriented pair (images loaded from disk)."""
        images = self.engine.load_images([pair.image_a, pair.image_b])
        return self.engine.tokenize(self.messages(pair), assistant_prefix, images=images)

    def perceive_messages(self, image: str) -> list[dict]:
        # No protocol system prompt: the task is only to see, and a short prompt keeps the sequence cheap.
        return [{"role": "user", "content": [{"type": "image", "image": image},
                                             {"type": "text", "text": DESCRIBE_QUESTION}]}]

    def _perceive(self, item: Item) -> tuple[list[dict], str, list[LoadedImage]]:
        record = self.records[item.pair]
        key = "spec_b" if item.swapped else "spec_a"
        if not record.meta or key not in record.meta:
            raise InvalidInputError(f"{record.source}: the perceive form needs the generator's meta.{key} "
                                    "(synthetic pairs only); train without it on other data")
        image = str(record.image_b if item.swapped else record.image_a)
        target = describe_creative(CreativeSpec.from_dict(record.meta[key])) + "<|im_end|>"
        return self.perceive_messages(image), target, self.engine.load_images([image])

    def example(self, item: Item) -> Example:
        if item.form == "perceive":
            messages, target, images = self._perceive(item)
        else:
            pair = orient(self.records[item.pair], item.swapped)
            reasoning = pair.reasoning if item.form == "reason" else ""
            images = self.engine.load_images([pair.image_a, pair.image_b])
            messages = self.messages(pair)
            target = target_text(reasoning, pair.label)
        prompt = self.engine.tokenize(messages, "", images=images)
        full = self.engine.tokenize(messages, target, images=images)
        n = len(prompt.ids)
        if not np.array_equal(full.ids[:n], prompt.ids):
            raise InvalidInputError(f"{self.records[item.pair].source}: the target's first token merges with the "
                                    "prompt's last; the tokenizer must split after the generation prompt")
        return Example(full.ids, full.positions, n, images)


@dataclass
class Batch:
    """Right-padded sequences with their images; logits are taken only where a target token is predicted."""

    input_ids: torch.Tensor  # int64 [B, S]
    attention_mask: torch.Tensor  # bool [B, S]
    position_ids: torch.Tensor  # int64 [3, B, S]
    pixel_values: torch.Tensor  # float32 [sum of patches, patch_dim], images in row order
    grid_thw: np.ndarray  # int64 [n_images, 3]
    logits_index: torch.Tensor  # int64 [B, K]: position whose logits predict labels[:, k]
    labels: torch.Tensor  # int64 [B, K], IGNORE where padded

    @property
    def n_target_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())


def collate(examples: Sequence[Example], engine: ModelSession, pad_id: int) -> Batch:
    """Pad examples to one batch (pad_id is any non-image token: masked out) and preprocess their images in one call."""
    b = len(examples)
    width = max(len(e.ids) for e in examples)
    k = max(1, max(len(e.ids) - e.n_prompt for e in examples))
    ids = np.full((b, width), pad_id, np.int64)
    mask = np.zeros((b, width), bool)
    pos = np.zeros((3, b, width), np.int64)
    index = np.zeros((b, k), np.int64)
    labels = np.full((b, k), IGNORE, np.int64)
    for r, e in enumerate(examples):
        s, t = len(e.ids), len(e.ids) - e.n_prompt
        ids[r, :s], mask[r, :s], pos[:, r, :s] = e.ids, True, e.positions
        index[r, :t] = np.arange(e.n_prompt - 1, s - 1)  # logits at i predict token i + 1
        labels[r, :t] = e.ids[e.n_prompt:]
    images = [im.pixels for e in examples for im in e.images]
    pixel_values, grid = preprocess(images, engine.preprocess_params)
    return Batch(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(pos), torch.from_numpy(pixel_values),
                 grid, torch.from_numpy(index), torch.from_numpy(labels))
