"""The whole recipe from a seed: synthetic data -> tokenizer -> perception -> CoT-SFT -> GRPO -> evaluation.

    OUT/data/         CreativePair dataset (112 px images, train/val/test.jsonl, groups.jsonl)
    OUT/tokenizer.json
    OUT/init/         the new checkpoint with the seed's random weights
    OUT/seen/         after perception training of the vision tower (OUT/seen_state/; perception.py)
    OUT/sft/          checkpoint after SFT        (OUT/sft_state/: resumable states, log.jsonl)
    OUT/grpo/         checkpoint after GRPO: the built-in model (OUT/grpo_state/)
    OUT/eval_sft.json, OUT/eval_grpo.json

Stages whose output exists are skipped (data, tokenizer, init) or resumed (vision, sft, grpo with resume=True), so an
interrupted `all` run is continued by running the same command with --resume.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from c4u_engine.data.creative_pair import load_pairs
from c4u_engine.engine.chat_template import ChatTemplate, QWEN2_5_VL_CHAT_TEMPLATE
from c4u_engine.train.batching import FORMS
from c4u_engine.train.grpo import GRPOConfig
from c4u_engine.train.model_spec import BUILTIN_PROMPT, ModelSpec
from c4u_engine.train.perception import PerceptionConfig
from c4u_engine.train.sft import SFTConfig
from c4u_engine.train.tokenizer_training import DEFAULT_VOCAB_SIZE, corpus_texts, save_tokenizer, train_tokenizer


def make_data(out_dir: str | os.PathLike[str], pairs: int, seed: int, groups: int = 200, size: int = 112,
              workers: int = 1) -> dict[str, Any]:
    """Generate the synthetic dataset (skipped when out_dir already holds one); returns its manifest."""
    from c4u_engine.data.pairs import make_dataset

    manifest = Path(out_dir) / "manifest.json"
    if not manifest.is_file():
        make_dataset(out_dir, pairs, seed, size, n_groups=groups, workers=workers)
    return json.loads(manifest.read_text(encoding="utf-8"))


def build_tokenizer(data_dir: str | os.PathLike[str], out_file: str | os.PathLike[str],
                    vocab_size: int = DEFAULT_VOCAB_SIZE, split: str = "train") -> int:
    """Train the tokenizer on the split's rendered prompts and reasoning targets; returns its size (added tokens
    included)."""
    records = load_pairs(data_dir, split)
    tok = train_tokenizer(corpus_texts(records, BUILTIN_PROMPT, ChatTemplate(QWEN2_5_VL_CHAT_TEMPLATE)), vocab_size)
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, str(out_file))
    return tok.get_vocab_size(with_added_tokens=True)


@dataclass(frozen=True)
class RecipeConfig:
    out_dir: str
    seed: int = 0
    pairs: int = 20000
    groups: int = 200
    vocab_size: int = DEFAULT_VOCAB_SIZE
    spec: ModelSpec = field(default_factory=ModelSpec)  # the new checkpoint's architecture
    workers: int = 1
    vision: dict[str, Any] = field(default_factory=dict)  # PerceptionConfig overrides
    sft: dict[str, Any] = field(default_factory=dict)  # SFTConfig overrides
    grpo: dict[str, Any] = field(default_factory=dict)  # GRPOConfig overrides
    eval_pairs: int = 300
    eval_groups: int = 100
    eval_modes: tuple[str, ...] = ("fast", "reason", "hybrid")


def run_all(config: RecipeConfig, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every stage into config.out_dir; returns the evaluation reports of the SFT and GRPO checkpoints."""
    from c4u_engine.train.evaluate import evaluate, format_report
    from c4u_engine.train.grpo import run_grpo
    from c4u_engine.train.perception import run_perception
    from c4u_engine.train.sft import prepare_checkpoint, run_sft

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    make_data(data, config.pairs, config.seed, config.groups, workers=config.workers)
    tokenizer = out / "tokenizer.json"
    if not tokenizer.is_file():
        build_tokenizer(data, tokenizer, config.vocab_size)
    if not (out / "init" / "config.json").is_file():
        prepare_checkpoint(SFTConfig(str(data), str(out / "init"), str(tokenizer), spec=config.spec, seed=config.seed))
    # The generator's data carries the specs perception training and the perceive form need (MODEL_CARD.md).
    vision = replace(PerceptionConfig(str(data), str(out / "init"), str(out / "seen"), seed=config.seed),
                     **config.vision)
    run_perception(vision, resume=resume, progress=progress)
    sft = replace(SFTConfig(str(data), str(out / "sft"), init_dir=str(out / "seen"), seed=config.seed, forms=FORMS),
                  **config.sft)
    run_sft(sft, resume=resume, progress=progress)
    grpo = replace(GRPOConfig(str(data), str(out / "sft"), str(out / "grpo"), seed=config.seed), **config.grpo)
    run_grpo(grpo, resume=resume, progress=progress)
    reports = {}
    for name in ("sft", "grpo"):
        report = evaluate(out / name, data, modes=config.eval_modes, max_pairs=config.eval_pairs,
                          max_groups=config.eval_groups)
        (out / f"eval_{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(format_report(report), flush=True)
        reports[name] = report
    return reports
