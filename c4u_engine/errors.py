"""Typed errors. Every failure c4u_engine reports on purpose is a C4UError subclass that names the problem."""

from __future__ import annotations


class C4UError(Exception):
    """Base class of every error c4u_engine raises on purpose."""


class InvalidInputError(C4UError, ValueError):
    """An argument or message has the wrong shape, type or value."""


class InvalidImageError(InvalidInputError):
    """An image cannot be used: unreadable, empty, truncated, too large, or an aspect ratio Qwen cannot handle."""


class ImageTooLargeError(InvalidImageError):
    """An image is over the pixel budget (decompression-bomb guard)."""


class ProfileError(InvalidInputError):
    """A user profile is malformed or too long for the model's context."""


class LimitExceededError(InvalidInputError):
    """A request exceeds a configured limit (candidates, context length, ...)."""


class ModelFormatError(C4UError):
    """A checkpoint or engine directory is malformed: a missing file or tensor, a shape mismatch, a pickle file."""


class ScreeningModelError(ModelFormatError):
    """A screening model directory is missing, malformed, or made for other inputs or classes than this version's."""


class ProductImageError(InvalidImageError):
    """Screening's product image is missing where the mode needs it, or cannot be read."""


class AllScreenedOutError(InvalidInputError):
    """Usability screening judged every candidate of a request unusable: nothing is left to select from."""


class UnsupportedModelError(ModelFormatError):
    """A checkpoint of an architecture c4u_engine does not run."""


class EngineArtifactError(ModelFormatError):
    """An exported engine directory (ONNX / TensorRT) does not match its manifest or this version."""


class BackendUnavailableError(C4UError, RuntimeError):
    """The requested runtime or device is not available here (says why)."""


class KernelArgumentError(InvalidInputError):
    """A native kernel was called with arguments of the wrong shape, dtype, device or layout."""


class AnswerParseError(C4UError):
    """A generated answer did not contain a parsable <answer>A|B</answer>."""


class OverloadedError(C4UError, RuntimeError):
    """The engine's request queue is full (max_queued_requests): retry later or add capacity."""


class DeadlineExceededError(C4UError, TimeoutError):
    """A request did not finish within its timeout; its work was dropped and its KV released."""


class RequestCancelledError(C4UError):
    """A request was cancelled, or the engine was closed, before it finished."""


class InferenceError(C4UError, RuntimeError):
    """A model call failed unexpectedly while running this request (the cause is attached); other requests go on."""
