"""Fixtures of the training tests: a small synthetic dataset, its tokenizer and a tiny random checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from c4u_engine.train.model_spec import ModelSpec

# The built-in model's structure (window + full attention blocks, GQA, M-RoPE, 112 px) at toy widths.
TINY_SPEC = ModelSpec(vision_depth=2, vision_hidden=32, vision_heads=2, vision_intermediate=64,
                      fullatt_block_indexes=(1,), text_hidden=64, text_intermediate=128, text_layers=2, text_heads=4,
                      text_kv_heads=2, max_position_embeddings=1024)


@pytest.fixture(scope="session")
def train_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 pairs (train/val/test) and 2 groups of 4 at 112 px."""
    from c4u_engine.data.pairs import make_dataset

    out = tmp_path_factory.mktemp("train_data")
    make_dataset(out, 24, seed=3, size=112, n_groups=2, val_fraction=0.1, test_fraction=0.2)
    return out


@pytest.fixture(scope="session")
def tokenizer_file(train_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from c4u_engine.train.pipeline import build_tokenizer

    path = tmp_path_factory.mktemp("train_tok") / "tokenizer.json"
    build_tokenizer(train_data, path, vocab_size=1024)
    return path


@pytest.fixture(scope="session")
def tiny_train_ckpt(train_data: Path, tokenizer_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete checkpoint directory of TINY_SPEC with seed-0 random weights (read-only by convention)."""
    from c4u_engine.train.sft import SFTConfig, prepare_checkpoint

    out = tmp_path_factory.mktemp("train_ckpt") / "ckpt"
    prepare_checkpoint(SFTConfig(str(train_data), str(out), str(tokenizer_file), spec=TINY_SPEC))
    return out


@pytest.fixture(scope="session")
def tiny_spec() -> ModelSpec:
    return TINY_SPEC


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: the test models are tiny, and on a shared 2-core machine a second OpenMP thread that
    has to wait for a busy core makes small matmuls 10-50x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
