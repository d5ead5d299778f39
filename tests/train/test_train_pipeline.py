"""The whole recipe (`python -m c4u_engine.train all`) at toy size: every stage runs, in order, into one directory."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from c4u_engine.api import Engine
from c4u_engine.train.pipeline import RecipeConfig, run_all


@pytest.mark.slow
def test_recipe_runs_every_stage_into_one_directory(tiny_spec, tmp_path):
    config = RecipeConfig(str(tmp_path / "run"), seed=1, pairs=12, groups=1, vocab_size=1024, spec=tiny_spec,
                          vision={"steps": 2, "batch_size": 4, "val_images": 4},
                          sft={"max_steps": 2, "batch_size": 3, "vision_aux_weight": 0.3},
                          grpo={"steps": 1, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 6,
                                "both_orders": True},
                          eval_pairs=2, eval_groups=1, eval_modes=("fast",))
    reports = run_all(config, progress=False)
    run = tmp_path / "run"
    for stage in ("init", "seen", "sft", "grpo"):
        assert (run / stage / "config.json").is_file() and (run / stage / "model.safetensors").is_file()
    init, seen = load_file(str(run / "init" / "model.safetensors")), load_file(str(run / "seen" / "model.safetensors"))
    assert any(k.startswith("visual.") and not (init[k] == seen[k]).all() for k in init)  # perception moved it
    assert (run / "seen_state" / "log.jsonl").is_file() and (run / "sft_state" / "log.jsonl").is_file()
    sft_log = [json.loads(line) for line in (run / "sft_state" / "log.jsonl").read_text().splitlines()]
    assert all("vision_aux_loss" in r for r in sft_log)
    assert set(reports) == {"sft", "grpo"} and reports["grpo"]["pairs"] == 2
    assert json.loads((run / "eval_grpo.json").read_text())["fast"]["accuracy"] is not None
    engine = Engine(run / "grpo", backend="torch")
    shown = [str(p) for p in sorted((run / "data" / "images").glob("*.png"))[:2]]
    profile = {"title": "Running shoes", "queries": ["running shoes sale"]}
    ab, ba = engine.compare(shown[0], shown[1], profile), engine.compare(shown[1], shown[0], profile)
    first_wins = (ab.prob_a + (1.0 - ba.prob_a)) / 2 >= 0.5  # both orders combined; a tie goes to the lower index
    assert engine.select(shown, profile).winner == (0 if first_wins else 1)
