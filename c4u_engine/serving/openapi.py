"""What /openapi.json says about the HTTP API's bodies: the answers of /v1/select and /v1/compare as pydantic models,
and `openapi_schema`, a model's JSON schema self-contained (pydantic's "#/$defs/..." references point nowhere once
the schema sits inside the OpenAPI document, so they are inlined).

The answer models document and nothing else: the server builds its answers with serving/schema.py (one form with
`c4u select --json`) and never passes them through these, so a field cannot be dropped or reshaped here; the tests
validate real answers against them (extra="forbid"), so the document cannot drift from what is sent.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from c4u_engine.comparison import Answer
from c4u_engine.screening.classes import CLASSES


class ComparisonOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first: int = Field(description="the input shown as Creative A")
    second: int = Field(description="the input shown as Creative B")
    answer: Answer | None = Field(description="the judge's pick; null when its answer could not be read")
    prob_a: float = Field(description="P(A): the probability that the judge picks Creative A")
    reasoning: str | None
    mode: str
    error: str | None
    raw_text: str | None


class ScreeningVerdictOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["unusable", "uncertain"] = Field(
        description="unusable: screened out (listed in `rejected` too); uncertain: kept, ranked and in `flagged`")
    label: Literal[CLASSES[1:]] = Field(description="the most likely defect")
    probability: float = Field(description="the screener's probability of `label`")
    p_available: float = Field(description="the screener's probability that the creative is usable")


class ScreeningStatsOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["image+product+text", "image+text"] = Field(
        description="image+product+text with the product image, else the weaker image+text mode")
    screened: int = Field(description="distinct candidates screened")
    screened_out: list[int] = Field(description="inputs screened out as unusable")
    flagged: list[int] = Field(description="inputs the screener was unsure of: kept and ranked")
    verdicts: dict[str, ScreeningVerdictOut] = Field(
        description="each screened-out or flagged input's verdict, by input index")
    threshold: float = Field(description="usable at or above this P(available)")
    reject_below: float = Field(description="screened out below this P(available); flagged in between")
    batches: int
    cached: int = Field(description="verdicts reused from earlier requests")
    seconds: float
    p_available: dict[str, float] = Field(description="P(available) of each distinct candidate, by input index")


class StatsOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # engine counters and timings: free-form
    screening: ScreeningStatsOut | None = Field(default=None, description="present when the request was screened")


class SelectionOut(BaseModel):
    """A Selection, as `c4u select --json` prints it (README, "A selection as JSON"); indices are input positions."""

    model_config = ConfigDict(extra="forbid")
    images: list[str | None] = Field(description="what each input was called: the uploaded file's name, or null")
    winner: int
    ranking: list[int] = Field(description="ranked inputs, best first")
    scores: dict[str, float] = Field(description="each ranked input's mean P of beating the opponents it met")
    comparisons: list[ComparisonOut]
    rejected: dict[str, str] = Field(description="unreadable inputs and those screening screened out, with why "
                                                 "(\"unusable: <class> (p=...)\"; stats.screening.verdicts as data)")
    duplicates: dict[str, int] = Field(description="input -> the input it repeats")
    stats: StatsOut
    deciding_pairs: list[tuple[int, int]]
    flagged: dict[str, str] = Field(description="inputs screening was unsure of (kept and ranked), with why")
    explanation: str | None


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """model's JSON schema with its "#/$defs/..." references replaced by what they name (no model here is
    recursive)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline({**defs[ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}})
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)
