"""The screening model's inputs, in numpy (no torch): what training and the onnxruntime runtime both feed the graph.

- generated ad: RGB resized to SIDE x SIDE, plus a fourth channel, the gradient magnitude of its luminance. That
  channel is our cheap substitute for the paper's saliency map (U2-Net; no pretrained weights here): it marks edges
  and so where an object stands out from its background. The paper's depth map (DPT) is dropped.
- product cut-out: RGBA, fitted into SIDE x SIDE keeping its aspect ratio, on a transparent margin; colour is
  premultiplied by alpha so transparent pixels carry no colour.
- text: lower-cased words hashed (crc32) into TEXT_VOCAB buckets, at most TEXT_LEN tokens, 0 = padding.

Images come out as uint8 [4, SIDE, SIDE]; the graph scales them to [0, 1] itself.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
from PIL import Image

SIDE = 64
TEXT_LEN = 16
TEXT_VOCAB = 1024
_WORD = re.compile(r"[a-z0-9%$]+")


def generated_planes(image: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 [4, SIDE, SIDE]: R, G, B and the edge (gradient-magnitude) channel of a generated ad."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    rgb = np.asarray(pil.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR), np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    gx = np.zeros_like(luma)
    gy = np.zeros_like(luma)
    gx[:, 1:-1] = luma[:, 2:] - luma[:, :-2]
    gy[1:-1, :] = luma[2:, :] - luma[:-2, :]
    edge = np.clip(np.sqrt(gx * gx + gy * gy) * 0.5, 0, 255)
    return np.concatenate([rgb.transpose(2, 0, 1), edge[None]], 0).round().astype(np.uint8)


def product_planes(cutout: Image.Image) -> np.ndarray:
    """uint8 [4, SIDE, SIDE]: the cut-out's premultiplied RGB and alpha, fitted and centred."""
    rgba = cutout.convert("RGBA")
    box = rgba.getchannel("A").getbbox()
    if box:  # the cut-out's visible extent, whatever transparent margin it came with
        rgba = rgba.crop(box)
    w, h = rgba.size
    s = (SIDE - 2) / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    canvas = Image.new("RGBA", (SIDE, SIDE), (0, 0, 0, 0))
    canvas.paste(rgba.resize((nw, nh), Image.Resampling.BILINEAR), ((SIDE - nw) // 2, (SIDE - nh) // 2))
    a = np.asarray(canvas, np.float32)
    alpha = a[..., 3:4] / 255.0
    return np.concatenate([(a[..., :3] * alpha).transpose(2, 0, 1), a[..., 3][None]], 0).round().astype(np.uint8)


def text_ids(text: str) -> np.ndarray:
    """int64 [TEXT_LEN]: hashed word ids (1..TEXT_VOCAB-1), 0-padded."""
    words = _WORD.findall(text.lower())[:TEXT_LEN]
    ids = np.zeros(TEXT_LEN, np.int64)
    for i, w in enumerate(words):
        ids[i] = 1 + zlib.crc32(w.encode()) % (TEXT_VOCAB - 1)
    return ids
