"""render_html: one self-contained, escaped page that shows every candidate."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from c4u_engine.errors import InvalidInputError
from c4u_engine.selection import Comparison, render_html, run_tournament, thumbnail_data_uri

EVIL = "<script>alert(1)</script>"


def _images() -> list[Image.Image | None]:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (90, 90, 90)]
    images: list[Image.Image | None] = [Image.new("RGB", (600, 300), c) for c in colours]
    images[1] = None  # the rejected input could not be read
    images[4] = Image.new("RGBA", (40, 900), (10, 20, 30, 128))
    return images


def _selection(synthetic_judge):
    # inputs: 0, 2, 4 judged; 1 rejected; 3 duplicates 0
    out = run_tournament(3, synthetic_judge([0.0, 2.0, 1.0], reasoning=EVIL + ' "quoted" & more'),
                         strategy="round_robin")
    return out.to_selection([0, 2, 4], rejected={1: f"unreadable: {EVIL}"}, duplicates={3: 0},
                            stats={"note": EVIL, "seconds": {"prefill": 0.5}})


def _data_uris(page: str) -> list[str]:
    return re.findall(r'src="(data:image/(?:png|jpeg);base64,[A-Za-z0-9+/=]+)"', page)


def test_page_shows_every_candidate_and_the_winner(synthetic_judge):
    sel = _selection(synthetic_judge)
    page = render_html(sel, _images(), "Likes: hiking & coffee <3")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for i in range(5):
        assert f"#{i}" in page
    assert sel.winner == 2 and "<b>Creative #2</b>" in page
    assert '<tr class="winner"><td class="num">1</td>' in page
    assert "Likes: hiking &amp; coffee &lt;3" in page
    assert "same image as" in page and "unreadable: " in page
    # pairwise matrix: 3 x 3 with the diagonal blank
    assert page.count('<td class="self"></td>') == 3
    assert page.count("&#9733;") >= len(sel.deciding_pairs)
    # what the numbers are, in words; a fast selection says how to get an explanation
    won, met = sel.record(2)
    assert f"{won} of {met}</td>" in page, page
    assert "mean P" in page
    assert sel.explanation or "mode=&quot;hybrid&quot;" in page


def test_page_names_the_files_where_there_are_files(synthetic_judge):
    sel = _selection(synthetic_judge)
    names = [f"ads/creative_{i}.png" for i in range(5)]
    page = render_html(sel, None, "", names=names)
    assert "<b>ads/creative_2.png (#2)</b>" in page
    for i in range(5):  # ranked, rejected and duplicate inputs alike
        assert f"ads/creative_{i}.png (#{i})" in page
    assert "<b>Creative #2</b>" not in page


def test_ranked_duplicates_stay_out_of_the_matrix(synthetic_judge):
    out = run_tournament(2, synthetic_judge([1.0, 0.0]), strategy="knockout")
    sel = out.to_selection()
    sel = type(sel)(winner=0, ranking=[0, 2, 1], scores={0: sel.scores[0], 2: sel.scores[0], 1: sel.scores[1]},
                    comparisons=sel.comparisons, duplicates={2: 0}, deciding_pairs=sel.deciding_pairs)
    page = render_html(sel, None, "")
    assert page.count('<td class="self"></td>') == 2
    assert '<td class="num">= #0</td>' in page


def test_model_text_is_escaped(synthetic_judge):
    page = render_html(_selection(synthetic_judge), _images(), EVIL)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;quoted&quot; &amp; more" in page


def test_no_external_resources(synthetic_judge):
    page = render_html(_selection(synthetic_judge), _images(), "profile")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "default-src 'none'" in page


def test_thumbnails_are_small_inline_images(synthetic_judge):
    page = render_html(_selection(synthetic_judge), _images(), "")
    uris = _data_uris(page)
    # winner card + ranking (3) + duplicate (1); the rejected input has no image
    assert len(uris) == 5
    assert "no preview" in page
    for uri in uris:
        image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert max(image.size) <= 256
    assert any(u.startswith("data:image/png") for u in uris)  # the RGBA input keeps its alpha
    assert any(u.startswith("data:image/jpeg") for u in uris)


def test_thumbnail_keeps_aspect_ratio():
    uri = thumbnail_data_uri(Image.new("RGB", (1000, 250), "white"))
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.size == (256, 64) and image.format == "JPEG"


def test_report_without_images_and_with_unparsable(synthetic_judge):
    out = run_tournament(2, synthetic_judge([0.0, 1.0], unparsable={(0, 1)}), strategy="knockout")
    page = render_html(out.to_selection(), None, "")
    assert "no preview" in page and "unparsable answer" in page
    assert "I like both &lt;answer&gt;?&lt;/answer&gt;" in page  # raw output shown, escaped
    assert "no explanation: fast mode" in page and "mode=&quot;hybrid&quot;" in page


def test_too_few_images_is_an_error(synthetic_judge):
    with pytest.raises(InvalidInputError, match="refers to input #4"):
        render_html(_selection(synthetic_judge), _images()[:3], "")


def test_broken_image_does_not_break_the_report():
    class Broken(Image.Image):
        def copy(self):
            raise OSError("truncated file")

    out = run_tournament(1, lambda pairs: [], strategy="knockout")
    page = render_html(out.to_selection(), [Broken()], "")
    assert "preview failed: truncated file" in page


def test_single_candidate_report():
    sel = run_tournament(1, lambda pairs: [Comparison(0, 1, "A", 0.5)], strategy="knockout").to_selection()
    page = render_html(sel, [Image.new("L", (10, 10))], "")
    assert "Comparisons (0)" in page and len(_data_uris(page)) == 2
