"""Tiny Qwen2.5-VL checkpoints for tests: the same files as a Hugging Face model directory, built on the spot.

A byte-level BPE tokenizer is trained here on a small English corpus and wrapped the way Qwen2.5-VL's is (NFC,
Qwen's split regex, byte-level BPE, its 22 added tokens after the BPE vocabulary); the model is
Qwen2_5_VLForConditionalGeneration with random weights and tiny sizes. Nothing is downloaded. transformers loads
every directory this writes (AutoTokenizer, AutoImageProcessor, Qwen2_5_VLForConditionalGeneration): it is the
oracle the engine is tested against.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from c4u_engine.engine.chat_template import QWEN2_5_VL_CHAT_TEMPLATE
from c4u_engine.train.tokenizer_training import QWEN_ADDED_TOKENS

ADDED_TOKENS = QWEN_ADDED_TOKENS  # Qwen2.5's added tokens in id order, and whether each is special
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BPE_VOCAB_SIZE = 480  # 256 byte symbols + merges; the added tokens come on top

CORPUS = """\
You are an expert judge of advertising creatives. Given a product title, a user's search queries and two creatives,
Creative A and Creative B, decide which creative this user is more likely to click.
<think>Creative A shows the product clearly on a clean background; Creative B is cluttered.</think><answer>A</answer>
<think>Creative B matches the query and shows the price; Creative A does not.</think><answer>B</answer>
Product title: Wireless headphones with noise cancelling, 30 hour battery, black.
User's high-frequency search queries: headphones; wireless earbuds; noise cancelling headset; gift for dad.
Product title: Summer dress, floral print, cotton, women's size M. Queries: summer dress; floral dress; beach wear.
Which creative is this user more likely to click? Answer A or B. The answer is A. The answer is B.
Compare the title match, the query match, the text in the image, the layout, the models and props, the background.
Is the product subject complete, clear and prominent? Is the selling point legible? Is there a call to action?
The two creatives are identical. They are too similar to judge. Picture 1: Picture 2: Creative 1, Creative 2.
Numbers 0 1 2 3 4 5 6 7 8 9 10 25 99 100 2024 $19.99 50% off! Free shipping. Buy now, limited time offer.
Describe this image. What is in the picture? A red shoe on a white table, next to a green plant and a blue cup.
The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX. the the the and and of of to to in in is is.
"""


@functools.lru_cache(maxsize=1)
def tokenizer_json() -> str:
    """tokenizer.json text of the tiny tokenizer (trained once per process; training is deterministic)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    for content, special in ADDED_TOKENS:
        tok.add_tokens([AddedToken(content, special=special, normalized=False)])
    return tok.to_str()


def _added_token_entry(content: str, special: bool) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": special}


def write_tokenizer(path: Path, chat_template: str) -> dict[str, int]:
    """Write tokenizer.json, tokenizer_config.json and chat_template.json as Qwen2.5-VL ships them; return the
    ids of the added tokens."""
    text = tokenizer_json()
    (path / "tokenizer.json").write_text(text, encoding="utf-8")
    added = {t["content"]: t["id"] for t in json.loads(text)["added_tokens"]}
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(added[c]): _added_token_entry(c, s) for c, s in ADDED_TOKENS},
        "additional_special_tokens": [c for c, s in ADDED_TOKENS[1:14]],
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    (path / "chat_template.json").write_text(json.dumps({"chat_template": chat_template}, indent=2), encoding="utf-8")
    return added


def _mrope_section(head_dim: int) -> list[int]:
    """Qwen's split of the rotary half-dimension into (temporal, height, width): 64 -> [16, 24, 24]."""
    half = head_dim // 2
    spatial = 3 * half // 8
    return [half - 2 * spatial, spatial, spatial]


def make_tiny_checkpoint(
    path: str | Path,
    *,
    seed: int = 0,
    vision: dict[str, Any] | None = None,
    text: dict[str, Any] | None = None,
    tie_word_embeddings: bool = False,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 16,
    chat_template: str | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a complete tiny Qwen2.5-VL checkpoint directory at `path` and return it.

    `vision` / `text` override Qwen2_5_VLVisionConfig / Qwen2_5_VLTextConfig fields; mrope_section follows the
    text head_dim unless `text` gives rope_parameters. `dtype` is the dtype the weights are stored in."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    added = write_tokenizer(path, chat_template or QWEN2_5_VL_CHAT_TEMPLATE)
    n_tokens = len(json.loads(tokenizer_json())["model"]["vocab"]) + len(added)
    eos, pad = added["<|im_end|>"], added["<|endoftext|>"]

    text_cfg: dict[str, Any] = dict(
        vocab_size=-(-n_tokens // 64) * 64,  # like Qwen, the embedding has spare rows past the tokenizer
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096, rms_norm_eps=1e-6, hidden_act="silu",
        bos_token_id=pad, eos_token_id=eos, pad_token_id=pad,
    )
    text_cfg.update(text or {})
    head_dim = text_cfg["hidden_size"] // text_cfg["num_attention_heads"]
    text_cfg.setdefault(
        "rope_parameters", {"rope_type": "default", "rope_theta": 1e6, "mrope_section": _mrope_section(head_dim)}
    )
    vision_cfg: dict[str, Any] = dict(
        depth=2, hidden_size=32, num_heads=2, intermediate_size=64, out_hidden_size=text_cfg["hidden_size"],
        patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
        tokens_per_second=2, hidden_act="silu", in_channels=3,
    )
    vision_cfg.update(vision or {})
    config = Qwen2_5_VLConfig(
        text_config=text_cfg,
        vision_config=vision_cfg,
        image_token_id=added["<|image_pad|>"],
        video_token_id=added["<|video_pad|>"],
        vision_start_token_id=added["<|vision_start|>"],
        vision_end_token_id=added["<|vision_end|>"],
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval().to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        bos_token_id=pad, eos_token_id=[eos, pad], pad_token_id=pad, do_sample=False
    )
    model.save_pretrained(path)

    merge, patch = vision_cfg["spatial_merge_size"], vision_cfg["patch_size"]
    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "do_convert_rgb": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "min_pixels": min_pixels, "max_pixels": max_pixels,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "patch_size": patch, "temporal_patch_size": vision_cfg["temporal_patch_size"], "merge_size": merge,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2), encoding="utf-8")
    return path


def make_test_image(width: int, height: int, seed: int = 0, *, as_pil: bool = False) -> Any:
    """A deterministic RGB uint8 image (H, W, 3) with structure (gradients + blocks + noise), or a PIL image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramps = [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) * 127 // max(width + height - 2, 1)]
    base = np.stack(ramps, -1)
    blocks = ((x // 7 + y // 5) % 3)[..., None] * rng.integers(0, 40, size=3)
    noise = rng.integers(0, 24, size=(height, width, 3))
    image = ((base + blocks + noise + rng.integers(0, 256, size=3)) % 256).astype(np.uint8)
    if as_pil:
        from PIL import Image

        return Image.fromarray(image, mode="RGB")
    return image


OUTLIER_FACTOR = 60.0


def outlier_channels(hidden: int, count: int, seed: int) -> np.ndarray:
    """`count` distinct channel indices of a hidden size, fixed by the seed."""
    return np.sort(np.random.default_rng(seed).choice(hidden, size=count, replace=False))


def add_outlier_channels(src: str | Path, dst: str | Path, *, factor: float = OUTLIER_FACTOR, text_channels: int = 4,
                         vision_channels: int = 3, seed: int = 0) -> Path:
    """Copy the checkpoint at src to dst with the same function but outlier activation channels, as real LLMs have
    (LLM.int8(), SmoothQuant: a few channels 10-100x the rest). Function-preserving: for a few hidden channels j,
    every RMSNorm weight (the decoder's input / post-attention norms and final norm, the vision blocks' norm1 /
    norm2) is multiplied by `factor` at j and the rows of the projections that consume that norm's output (q, k, v,
    gate, up, lm_head; the vision qkv, gate, up) divided by it at j, so in exact arithmetic every output is unchanged
    while the activations entering those projections carry channels `factor` times larger. The vision merger's
    norm is left alone (the merger stays float). Returns dst."""
    import shutil

    from safetensors.numpy import load_file, save_file

    src, dst = Path(src), Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    config = json.loads((src / "config.json").read_text())
    text_cfg, vision_cfg = config["text_config"], config["vision_config"]
    tensors = load_file(str(src / "model.safetensors"))
    scale_t = np.ones(text_cfg["hidden_size"], np.float32)
    scale_t[outlier_channels(text_cfg["hidden_size"], text_channels, seed)] = factor
    scale_v = np.ones(vision_cfg["hidden_size"], np.float32)
    scale_v[outlier_channels(vision_cfg["hidden_size"], vision_channels, seed + 1)] = factor

    def fold(norm: str, consumers: list[str], scale: np.ndarray) -> None:
        tensors[norm] = tensors[norm] * scale
        for name in consumers:
            tensors[name] = tensors[name] / scale[None, :]  # nn.Linear weight [out, in]: columns are input channels

    for i in range(text_cfg["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        fold(f"{layer}.input_layernorm.weight", [f"{layer}.self_attn.{p}_proj.weight" for p in "qkv"], scale_t)
        fold(f"{layer}.post_attention_layernorm.weight", [f"{layer}.mlp.{p}_proj.weight" for p in ("gate", "up")],
             scale_t)
    if "lm_head.weight" in tensors:  # tied heads share the embedding table, whose columns are not ours to scale
        fold("model.norm.weight", ["lm_head.weight"], scale_t)
    for i in range(vision_cfg["depth"]):
        block = f"visual.blocks.{i}"
        fold(f"{block}.norm1.weight", [f"{block}.attn.qkv.weight"], scale_v)
        fold(f"{block}.norm2.weight", [f"{block}.mlp.{p}_proj.weight" for p in ("gate", "up")], scale_v)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(dst / "model.safetensors"),
              metadata={"format": "pt"})
    return dst
