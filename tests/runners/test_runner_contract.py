"""The runner contract's shared parts (runners/base.py): model facts set once from the config, forward's arguments
checked once for every runner (InvalidInputError naming the argument) before the runtime sees them."""

from __future__ import annotations

import numpy as np
import pytest

from c4u_engine.errors import InvalidInputError
from c4u_engine.runners.torch_runner import TorchRunner


@pytest.fixture(scope="module")
def runner(tiny_ckpt):
    return TorchRunner(tiny_ckpt)


def test_model_facts_come_from_the_config(runner):
    text = runner.model.config.text
    assert (runner.num_layers, runner.num_kv_heads, runner.head_dim, runner.hidden_size, runner.vocab_size) == \
        (text.num_hidden_layers, text.num_key_value_heads, text.head_dim, text.hidden_size, text.vocab_size)
    assert runner.image_token_id == runner.model.config.image_token_id


def test_in_memory_runner_binds_the_same_facts(runner):
    from c4u_engine.train.engine_bridge import InMemoryRunner

    live = InMemoryRunner(runner.model)
    for name in ("num_layers", "num_kv_heads", "head_dim", "hidden_size", "vocab_size", "image_token_id", "dtype",
                 "device"):
        assert getattr(live, name) == getattr(runner, name), name
    assert live.model is runner.model


def _args(runner, b=2, s=3):
    embeds = runner.embed(np.ones((b, s), np.int64), [])
    return dict(embeds=embeds, position_ids=np.zeros((3, b, s), np.int64), past=None,
                attention_mask=np.ones((b, s), bool), logits_index=np.zeros((b, 1), np.int64))


@pytest.mark.parametrize("name,bad,message", [
    ("embeds", np.zeros((2, 3)), "embeds must be"),
    ("position_ids", np.zeros((3, 2, 4), np.int64), "position_ids must be"),
    ("attention_mask", np.ones((2, 4), bool), "attention_mask must be"),
    ("logits_index", np.zeros((3, 1), np.int64), "logits_index must be"),
    ("logits_index", np.full((2, 1), 3, np.int64), "logits_index must lie in"),
    ("reserve", -1, "reserve must be"),
])
def test_forward_arguments_checked_by_name(runner, name, bad, message):
    args = _args(runner)
    args[name] = bad
    with pytest.raises(InvalidInputError, match=message):
        runner.forward(**args)


def test_forward_still_runs(runner):
    logits, kv = runner.forward(**_args(runner))
    assert logits.shape == (2, 1, runner.vocab_size) and runner.kv_length(kv) == 3
