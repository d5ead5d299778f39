"""A contact sheet of sampled pairs, to look at the generator's output with one's own eyes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from c4u_engine.data.creatives import font, render
from c4u_engine.data.pairs import sample_pair


def contact_sheet(n_pairs: int = 8, seed: int = 0, size: int = 224, columns: int = 2) -> Image.Image:
    """n_pairs sampled pairs, each drawn as A | B with a caption: title, profile kind, appeals, label (with *)."""
    rng = np.random.default_rng([seed, 99])
    caption = max(14, size // 9)
    cell_w, cell_h, gap = 2 * size + 4, size + caption, 8
    rows = (n_pairs + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (cell_w + gap), rows * (cell_h + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    f = font(max(8, caption // 2 - 1))
    for i in range(n_pairs):
        sample = sample_pair(rng)
        x, y = (i % columns) * (cell_w + gap), (i // columns) * (cell_h + gap)
        sheet.paste(render(sample.spec_a, size), (x, y + caption))
        sheet.paste(render(sample.spec_b, size), (x + size + 4, y + caption))
        mark_a, mark_b = ("*", "") if sample.label == "A" else ("", "*")
        draw.text((x, y), f"{sample.product.title} | {sample.profile.kind}", font=f, fill=(0, 0, 0))
        draw.text((x, y + caption // 2), f"A{mark_a} {sample.appeal_a:+.2f}   B{mark_b} {sample.appeal_b:+.2f}",
                  font=f, fill=(180, 0, 0))
    return sheet
