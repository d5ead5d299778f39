"""The wire forms shared by the HTTP server and `c4u select --json`: a Selection and a Comparison as JSON, and every
C4UError as an HTTP status plus {"error": {"type": ..., "message": ...}}. No web framework is imported here.
"""

from __future__ import annotations

from typing import Any, Sequence

from c4u_engine.comparison import Comparison
from c4u_engine.errors import (C4UError, DeadlineExceededError, ImageTooLargeError, InferenceError, InvalidInputError,
                               LimitExceededError, ModelFormatError, OverloadedError, RequestCancelledError)
from c4u_engine.selection.results import Selection

RETRY_AFTER_S = 1  # what an overloaded or draining server tells clients to wait

# Most specific first: the first class an error is an instance of gives its status.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (OverloadedError, 503),
    (RequestCancelledError, 503),
    (DeadlineExceededError, 504),
    (ImageTooLargeError, 413),
    (LimitExceededError, 413),
    (InvalidInputError, 422),
    (InferenceError, 500),
    (ModelFormatError, 500),
    (C4UError, 500),
)


def selection_json(selection: Selection, images: Sequence[str | None]) -> dict[str, Any]:
    """The one JSON form of a Selection, for `c4u select --json` and the server's /v1/select alike (README, "A
    selection as JSON"): {"images": what each input was called (the CLI's file paths, the uploaded files' names,
    null for a base64 image), **Selection.to_dict()}."""
    return {"images": list(images), **selection.to_dict()}


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    return comparison.to_dict()


def error_status(exc: BaseException) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_json(exc: BaseException) -> dict[str, Any]:
    """{"error": {"type", "message"}}; an unexpected exception is reported without its internals."""
    if isinstance(exc, C4UError):
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"error": {"type": "InternalError", "message": "internal server error"}}


def retry_headers(status: int) -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else {}
