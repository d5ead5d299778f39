"""Chat messages in transformers' format: validation, the images they carry, and image-pad expansion.

A message is {"role": "system" | "user" | "assistant", "content": str | [item, ...]} where an item is
{"type": "text", "text": str} or {"type": "image", "image": <path | bytes | PIL.Image | numpy array>}.
Anything else is refused with the message and item index, so a bad request fails before any compute.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from c4u_engine.errors import InvalidInputError

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content")
ITEM_KEYS = {"text": ("type", "text"), "image": ("type", "image")}


def _is_image_object(value: Any) -> bool:
    """An image as a path, encoded bytes, a PIL image or a pixel array (decoding is the imaging layer's job)."""
    if isinstance(value, (str, os.PathLike)):
        return bool(os.fspath(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value) > 0
    if isinstance(value, np.ndarray):
        return True
    from c4u_engine.imaging import LoadedImage  # an image the engine already decoded and hashed

    if isinstance(value, LoadedImage):
        return True
    pil_image = sys.modules.get("PIL.Image")  # an object can only be a PIL image if PIL is already imported
    return pil_image is not None and isinstance(value, pil_image.Image)


def _check_keys(where: str, obj: Mapping, allowed: Sequence[str]) -> None:
    missing = [k for k in allowed if k not in obj]
    if missing:
        raise InvalidInputError(f"{where}: missing key {missing[0]!r} (expected keys {list(allowed)})")
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise InvalidInputError(f"{where}: unknown key {unknown[0]!r} (expected keys {list(allowed)})")


def _validate_item(where: str, item: Any) -> dict:
    if not isinstance(item, Mapping):
        raise InvalidInputError(f"{where}: a content item must be a dict, got {type(item).__name__}")
    kind = item.get("type")
    if kind not in ITEM_KEYS:
        raise InvalidInputError(f"{where}: 'type' must be 'text' or 'image', got {kind!r}")
    _check_keys(where, item, ITEM_KEYS[kind])
    if kind == "text":
        if not isinstance(item["text"], str):
            raise InvalidInputError(f"{where}: 'text' must be a str, got {type(item['text']).__name__}")
        return {"type": "text", "text": item["text"]}
    image = item["image"]
    if not _is_image_object(image):
        raise InvalidInputError(
            f"{where}: 'image' must be a non-empty path, non-empty bytes, a PIL.Image or a numpy array, "
            f"got {type(image).__name__}"
        )
    return {"type": "image", "image": image}


def validate_messages(messages: Any) -> list[dict]:
    """Check `messages` and return normalized copies (new dicts; images passed through untouched).

    Raises InvalidInputError naming the message index (and item index) of the first problem."""
    if not isinstance(messages, (list, tuple)):
        raise InvalidInputError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if not messages:
        raise InvalidInputError("messages is empty: at least one message is needed")
    normalized = []
    for m, message in enumerate(messages):
        where = f"messages[{m}]"
        if not isinstance(message, Mapping):
            raise InvalidInputError(f"{where}: a message must be a dict, got {type(message).__name__}")
        _check_keys(where, message, MESSAGE_KEYS)
        role = message["role"]
        if role not in ROLES:
            raise InvalidInputError(f"{where}: role must be one of {list(ROLES)}, got {role!r}")
        if role == "system" and m != 0:
            raise InvalidInputError(f"{where}: a system message may only be the first message")
        content = message["content"]
        if isinstance(content, str):
            normalized.append({"role": role, "content": content})
            continue
        if not isinstance(content, (list, tuple)):
            raise InvalidInputError(
                f"{where}: content must be a str or a list of content items, got {type(content).__name__}"
            )
        if not content:
            raise InvalidInputError(f"{where}: content list is empty")
        items = [_validate_item(f"{where}.content[{i}]", item) for i, item in enumerate(content)]
        normalized.append({"role": role, "content": items})
    return normalized


def collect_images(messages: Any) -> list[object]:
    """The images of `messages` (validated first), in order of appearance: the order of <|image_pad|> in the prompt."""
    return [
        item["image"]
        for message in validate_messages(messages)
        if isinstance(message["content"], list)
        for item in message["content"]
        if item["type"] == "image"
    ]


def expand_image_pads(token_ids: Sequence[int], image_token_counts: Sequence[int], image_pad_id: int) -> list[int]:
    """Replace the i-th <|image_pad|> id with image_token_counts[i] copies of it.

    The token-level twin of Qwen2_5_VLProcessor, which replaces each <|image_pad|> in the text with
    grid_t * grid_h * grid_w // merge_size**2 copies before tokenizing (an added token never merges with its
    neighbours, so both give the same ids)."""
    pads = sum(1 for t in token_ids if t == image_pad_id)
    if pads != len(image_token_counts):
        raise InvalidInputError(
            f"the prompt has {pads} image placeholder(s) (<|image_pad|>, id {image_pad_id}) "
            f"but {len(image_token_counts)} image(s) were given"
        )
    for i, count in enumerate(image_token_counts):
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise InvalidInputError(f"image_token_counts[{i}] must be a positive int, got {count!r}")
    counts = iter(image_token_counts)
    expanded: list[int] = []
    for t in token_ids:
        if t == image_pad_id:
            expanded.extend([image_pad_id] * int(next(counts)))
        else:
            expanded.append(t)
    return expanded
