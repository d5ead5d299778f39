"""The comparison prompt of one profile, cut into its spans once, from the rendered template.

A comparison prompt is [prefix][image A span][middle text][image B span][tail: question, assistant prefix], and the
prefix is [the system turn, the same for every profile][the profile]. The chat
template is rendered once per profile with two image placeholders and split at them; each text piece is tokenized
once (the image tokens are added special tokens, which the tokenizer splits on before anything else, so tokenizing
the pieces equals tokenizing the whole: checked when an engine loads). A comparison's token ids are then a
concatenation, and its spans are known by construction rather than found again by searching token ids. The cached
KV entries these spans make (and their keys) are the request's prompt chain (engine/chain.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from c4u_engine.comparison import JUDGE_MODES
from c4u_engine.errors import ModelFormatError

Grid = tuple[int, int, int]


@dataclass(frozen=True)
class ComparisonLayout:
    """One comparison's tokens: [0, prefix_end) prefix, [prefix_end, a_end) image A span, [a_end, S) the rest."""

    ids: np.ndarray  # int64 [S], image pads expanded
    positions: np.ndarray  # int64 [3, S] M-RoPE
    prefix_end: int
    a_end: int

    @property
    def next_position(self) -> int:
        return int(self.positions[:, -1].max()) + 1


class ComparisonSpans:
    """Token spans of one profile's comparison prompts (any images, both judge modes), computed once.

    session: the ModelSession (tokenizer, chat template, image token counts, config); answer: its AnswerTokens.
    scope: "" to share KV with other requests, or a private scope (a request that runs without caches).
    """

    def __init__(self, session, template, answer, profile, scope: str = "") -> None:
        self._session = session
        tok = session.tokenizer
        self._marker = "".join(tok.id_to_token(t) for t in (tok.vision_start_id, tok.image_pad_id, tok.vision_end_id))
        text = session.render(template.messages(profile, "<image A>", "<image B>"))
        parts = text.split(self._marker)
        if len(parts) != 3:
            raise ModelFormatError(f"the comparison prompt must render exactly two images as {self._marker!r} "
                                   f"(found {len(parts) - 1}; check the prompt and chat templates)")
        self.scope = scope
        self.prefix_ids = np.asarray(tok.encode(parts[0]), dtype=np.int64)
        self.system_ids = self._system_turn(tok, parts[0], template.profile_text(profile) + template.label_a)
        self._middle = np.asarray(tok.encode(parts[1]), dtype=np.int64)
        self._tails = {m: np.asarray(tok.encode(parts[2] + answer.assistant_prefix(template, m)), dtype=np.int64)
                       for m in JUDGE_MODES}
        self._image_ids = (tok.vision_start_id, tok.image_pad_id, tok.vision_end_id)
        self._layouts: dict[tuple[Grid, Grid, str], ComparisonLayout] = {}
        self._prefix_a: dict[Grid, tuple[np.ndarray, np.ndarray]] = {}

    def _system_turn(self, tok, prefix_text: str, user_text: str) -> np.ndarray:
        """The part of the prefix before the profile, cut after its last special token (so that it tokenizes the
        same alone): the system turn with the evaluation protocol, the same for every request. Empty when there
        is no such cut."""
        at = prefix_text.rfind(user_text)
        if at < 0:
            return np.zeros(0, np.int64)
        before = prefix_text[:at]
        cut = max((before.rfind(t) + len(t) for t in tok.special_tokens if before.rfind(t) >= 0), default=0)
        system = tok.encode(prefix_text[:cut]) if cut else []
        if not system or system + tok.encode(prefix_text[cut:]) != self.prefix_ids.tolist():
            return np.zeros(0, np.int64)
        return np.asarray(system, np.int64)

    def _image_span(self, grid: Grid) -> np.ndarray:
        start, pad, end = self._image_ids
        n = self._session.image_token_count(grid)
        return np.concatenate([[start], np.full(n, pad), [end]]).astype(np.int64)

    def prefix_a(self, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        """(ids [n], positions [3, n]) of [prefix + image A span] for an image A of this grid."""
        hit = self._prefix_a.get(grid)
        if hit is None:
            ids = np.concatenate([self.prefix_ids, self._image_span(grid)])
            positions = self._session.position_ids(ids[None], np.array([grid]))
            hit = self._prefix_a[grid] = (ids, positions[:, 0, :])
        return hit

    def layout(self, grid_a: Grid, grid_b: Grid, mode: str) -> ComparisonLayout:
        """The whole comparison prompt for images of these grids in judge mode `mode`."""
        key = (grid_a, grid_b, mode)
        hit = self._layouts.get(key)
        if hit is None:
            first, _ = self.prefix_a(grid_a)
            ids = np.concatenate([first, self._middle, self._image_span(grid_b), self._tails[mode]])
            positions = self._session.position_ids(ids[None], np.array([grid_a, grid_b]))
            hit = self._layouts[key] = ComparisonLayout(ids, positions[:, 0, :], len(self.prefix_ids), len(first))
        return hit


def check_spans(session, template, answer) -> None:
    """The prompt cut into spans must tokenize exactly as the whole rendered prompt does (checked once per engine,
    on synthetic images): a chat template or tokenizer that merges text across the image tokens is refused."""
    from c4u_engine.imaging import load_image
    from c4u_engine.profile import Profile

    side = session.preprocess_params.patch_size * session.preprocess_params.merge_size * 2
    a = load_image(np.zeros((side, side, 3), np.uint8))
    b = load_image(np.full((side, 2 * side, 3), 255, np.uint8))
    profile = Profile(title="Check title", queries=("query one", "query two"), extra="extra")
    spans = ComparisonSpans(session, template, answer, profile)
    for mode in JUDGE_MODES:
        whole = session.tokenize(template.messages(profile, a, b), answer.assistant_prefix(template, mode),
                                images=[a, b]).ids
        if not np.array_equal(whole, spans.layout(session.grid_of(a), session.grid_of(b), mode).ids):
            raise ModelFormatError("the comparison prompt does not tokenize the same in pieces as a whole "
                                   "(the chat template or tokenizer merges text across the image tokens)")
