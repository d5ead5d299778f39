"""A small byte-level BPE tokenizer for the built-in model, trained on the prompts and reasonings it will see.

The pipeline is Qwen2.5's (NFC, Qwen's split regex, byte-level BPE, ByteLevel decoder), so any text still encodes
(every byte is a symbol) and transformers' Qwen2Tokenizer loads the file. The vocabulary is learnt from rendered
comparison prompts and `<think>reasoning</think><answer>X</answer>` targets, so a prompt or a chain of thought
takes few tokens. Added tokens, after the BPE vocabulary as in Qwen2.5:
- Qwen2.5-VL's 22 added tokens with their ids' order and special flags (<|im_start|>, <|image_pad|>, ...);
- <think> </think> <answer> </answer> as added NON-special tokens: one id each, never merged with neighbours, and
  kept by decode(skip_special_tokens=True), which the engine's answer parser reads. After "<answer>" the letters
  "A" and "B" are then single tokens (byte symbols), which fast mode needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers

from c4u_engine.data.creative_pair import PairRecord
from c4u_engine.engine.chat_template import ChatTemplate
from c4u_engine.engine.prompt import PromptTemplate
from c4u_engine.errors import InvalidInputError
from c4u_engine.profile import Profile

# Qwen2.5's added tokens, in id order after the BPE vocabulary, and whether each is special.
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
REASONING_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
ADDED_TOKENS = QWEN_ADDED_TOKENS + tuple((t, False) for t in REASONING_TOKENS)
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DEFAULT_VOCAB_SIZE = 2048  # BPE entries (256 byte symbols + merges); the added tokens come on top


def target_text(reasoning: str, label: str) -> str:
    """The assistant's answer the model is trained to write: chain of thought, then the letter, then end of turn."""
    if label not in ("A", "B"):
        raise InvalidInputError(f"label={label!r}; valid values: 'A', 'B'")
    return f"<think>{reasoning}</think><answer>{label}</answer><|im_end|>"


def corpus_texts(records: Sequence[PairRecord], prompt: PromptTemplate, chat_template: ChatTemplate
                 ) -> Iterator[str]:
    """Rendered comparison prompts (one <|image_pad|> per image) and answer targets of the records, both orders'
    wording alike (the prompt does not depend on the order; the reasoning's A/B words do, but both letters occur)."""
    for record in records:
        profile = Profile(title=record.product_title, queries=record.query)
        messages = prompt.messages(profile, "image_a", "image_b")
        yield chat_template.render(messages, add_generation_prompt=True)
        yield target_text(record.reasoning or "", record.label)


def _without_added_tokens(texts: Iterable[str]) -> Iterator[str]:
    # Added tokens are matched before BPE, so merges learnt inside their spellings would never be used.
    for text in texts:
        for token, _ in ADDED_TOKENS:
            text = text.replace(token, "\n")
        yield text


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 2) -> Tokenizer:
    """Train the byte-level BPE on `texts` and add ADDED_TOKENS after its vocabulary. Deterministic for given texts."""
    if vocab_size < 257:
        raise InvalidInputError(f"vocab_size={vocab_size}; expected > 256 (the byte alphabet alone takes 256)")
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_without_added_tokens(texts), trainer=trainer)
    for content, special in ADDED_TOKENS:
        tok.add_tokens([AddedToken(content, special=special, normalized=False)])
    check_tokenizer(tok)
    return tok


def check_tokenizer(tok: Tokenizer) -> None:
    """Raise InvalidInputError unless every added token is one id and "A"/"B" after "<answer>" are one token each."""
    for content, _ in ADDED_TOKENS:
        ids = tok.encode(content, add_special_tokens=False).ids
        if ids != [tok.token_to_id(content)]:
            raise InvalidInputError(f"tokenizer: added token {content!r} encodes to {ids}, expected one id")
    for letter in ("A", "B"):
        ids = tok.encode(f"<answer>{letter}</answer>", add_special_tokens=False).ids
        if len(ids) != 3:
            raise InvalidInputError(f"tokenizer: '<answer>{letter}</answer>' encodes to {ids}; the answer letter "
                                    "must be a single token")


def _added_token_entry(content: str, special: bool) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": special}


def tokenizer_config(tok: Tokenizer, chat_template: str, model_max_length: int) -> dict:
    """tokenizer_config.json as Qwen2.5-VL ships it (Qwen2Tokenizer, <|im_end|> ends a turn), for this tokenizer."""
    ids = {content: tok.token_to_id(content) for content, _ in ADDED_TOKENS}
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(ids[c]): _added_token_entry(c, s) for c, s in ADDED_TOKENS},
        "additional_special_tokens": [c for c, s in QWEN_ADDED_TOKENS[1:14]],
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def save_tokenizer(tok: Tokenizer, path: str) -> None:
    """Write tokenizer.json (pretty-printed, so diffs between trainings read well)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(json.loads(tok.to_str()), indent=2, ensure_ascii=False) + "\n")
