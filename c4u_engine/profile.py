"""The user profile a selection is made for: product title, high-frequency queries, free-form extra context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from c4u_engine.errors import ProfileError

MAX_FIELD_CHARS = 4000  # a hard sanity bound; the real bound is the model's context, checked after tokenizing


@dataclass(frozen=True)
class Profile:
    """What the judge knows about the user and the product.

    title: the product title the creatives advertise.
    queries: the user's high-frequency search queries, most frequent first.
    extra: any further context (shown to the model verbatim).
    """

    title: str
    queries: tuple[str, ...] = field(default_factory=tuple)
    extra: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.title, str) or not self.title.strip():
            raise ProfileError("profile.title must be a non-empty string")
        queries = self.queries
        if isinstance(queries, str):
            queries = (queries,)
        try:
            queries = tuple(queries)
        except TypeError:
            raise ProfileError(
                f"profile.queries must be a list of strings, got {type(self.queries).__name__}") from None
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                raise ProfileError(f"profile.queries[{i}] must be a non-empty string, got {q!r}")
        object.__setattr__(self, "queries", tuple(q.strip() for q in queries))
        if not isinstance(self.extra, str):
            raise ProfileError(f"profile.extra must be a string, got {type(self.extra).__name__}")
        for name, text in (("title", self.title), ("extra", self.extra), ("queries", "; ".join(self.queries))):
            if len(text) > MAX_FIELD_CHARS:
                raise ProfileError(f"profile.{name} is {len(text)} characters; the limit is {MAX_FIELD_CHARS}")

    @classmethod
    def coerce(cls, value: Any) -> "Profile":
        """Accept a Profile, a dict with title/queries/extra, or a plain string (the title)."""
        if isinstance(value, Profile):
            return value
        if isinstance(value, str):
            return cls(title=value)
        if isinstance(value, dict):
            unknown = set(value) - {"title", "queries", "query", "extra"}
            if unknown:
                raise ProfileError(f"unknown profile keys {sorted(unknown)}; valid keys: title, queries, extra")
            if "title" not in value:
                raise ProfileError("profile dict needs a 'title'")
            queries = value.get("queries", value.get("query", ()))
            return cls(title=value["title"], queries=queries or (), extra=value.get("extra", "") or "")
        raise ProfileError(f"profile must be a Profile, a dict or a string, got {type(value).__name__}")
