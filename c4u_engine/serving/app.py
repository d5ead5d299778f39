"""The HTTP API (FastAPI): one Engine per process; the engine's scheduler does all batching and queueing.

    POST /v1/select   JSON {images: [base64...], profile: {title, queries, extra}, mode, strategy, orders, top_k,
                      both_orders, max_new_tokens, timeout_s, strict, screen, product_image: base64, screen_mode}, or
                      multipart/form-data (files "images" and "product_image", JSON "request")
                      -> the Selection, as `c4u select --json` prints it
    POST /v1/compare  JSON {image_a, image_b, profile, mode, max_new_tokens, timeout_s} -> one Comparison
    GET  /healthz     alive;  GET /readyz  model loaded and warm (503 while starting or draining)
    GET  /metrics     Prometheus text format;  /docs and /openapi.json as FastAPI serves them

Images travel only as bytes inside the request: the server never reads a path or fetches a URL for a client.
Every error is {"error": {"type", "message"}} with a status from serving/schema.py; overload and draining answer
503 with Retry-After. With an API key, /v1/* and /metrics need "Authorization: Bearer <key>" (compared in constant
time); /healthz and /readyz stay open for load balancers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from c4u_engine._version import __version__
from c4u_engine.comparison import JUDGE_MODES
from c4u_engine.errors import C4UError, InvalidInputError, LimitExceededError, OverloadedError
from c4u_engine.screening.screener import MODES as SCREEN_MODES
from c4u_engine.selection.policy import MODES, ORDERS, STRATEGY_NAMES
from c4u_engine.serving.metrics import CONTENT_TYPE, ServerMetrics
from c4u_engine.serving.openapi import ComparisonOut, SelectionOut, openapi_schema
from c4u_engine.serving.schema import comparison_json, error_json, error_status, retry_headers, selection_json

log = logging.getLogger("c4u_engine.serving")


@dataclass(frozen=True)
class ServerLimits:
    max_body_bytes: int = 64 << 20  # a whole request (413 beyond)
    max_image_bytes: int = 16 << 20  # one encoded image (413 beyond)


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=4000)
    queries: list[str] = Field(default_factory=list, max_length=64)
    extra: str = Field(default="", max_length=4000)


class SelectIn(BaseModel):
    """A selection request; `images` are base64 strings (a data: URI prefix is accepted)."""

    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(default_factory=list, description="base64-encoded image files (PNG, JPEG, WebP, ...)")
    profile: ProfileIn
    mode: Literal[MODES] = "fast"
    strategy: Literal[STRATEGY_NAMES] = "knockout"
    orders: Literal[ORDERS] | None = Field(
        default=None, description="both (the default: every match judged as A/B and B/A), one, or adaptive (the "
        "second order only where the first is not decisive)")
    top_k: Annotated[int, Field(strict=True, ge=1)] | None = Field(
        default=None, description="the first top_k ordered by a round robin: a knockout until 2 x top_k "
        "candidates remain, then a round robin among them (clamped to the number of candidates)")
    both_orders: bool | None = Field(default=None, description="the older spelling of orders: true = both, false = "
                                     "one; must agree with orders when both are given")
    max_new_tokens: int = Field(default=256, ge=1, le=8192)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    strict: bool = False
    screen: bool | None = Field(default=None, description="screen out the creatives the usability screener judges "
                                "unusable before selecting (default: when product_image is given)")
    product_image: str | None = Field(default=None, description="base64 product cut-out (PNG with transparency) "
                                      "screening compares each creative with; implies screening")
    screen_mode: Literal[SCREEN_MODES] = Field(default="auto", description="auto: with the product image when "
                                               "given; full: requires it; text: image+text only (weaker)")


@dataclass
class _SelectRequest:
    body: SelectIn
    images: list[bytes] = field(default_factory=list)
    names: list[str | None] = field(default_factory=list)  # the uploaded files' names; None for base64 images
    product: bytes | None = None

    @property
    def screen(self) -> bool:
        """As `c4u select --product`: a product image implies screening."""
        if self.body.screen is False and self.product is not None:
            raise InvalidInputError("product_image: given with screen=false (the product image is for screening; "
                                    "drop one of them)")
        return bool(self.body.screen) or self.product is not None


class CompareIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_a: str
    image_b: str
    profile: ProfileIn
    mode: Literal[JUDGE_MODES] = "fast"
    max_new_tokens: int = Field(default=256, ge=1, le=8192)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)


class _State:
    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.admitted = 0  # /v1/ requests being served (a draining server waits for them)


def create_app(engine, *, api_key: str | None = None, limits: ServerLimits = ServerLimits(), warm: bool = True,
               close_engine: bool = False) -> FastAPI:
    """The app around a loaded Engine. warm: run one small selection before /readyz says ready. close_engine:
    close the engine when the app shuts down (the server process owns it)."""
    state = _State()
    metrics = ServerMetrics(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if warm:
            await asyncio.get_running_loop().run_in_executor(None, _warm_up, engine)
        state.ready = True
        yield
        state.draining = True
        if close_engine:
            engine.close()

    app = FastAPI(title="c4u_engine", version=__version__, lifespan=lifespan,
                  description="Select the advertising creative a user is most likely to click.")
    app.state.c4u = state
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        t0 = time.perf_counter()
        if state.draining and request.url.path.startswith("/v1/"):
            # decided once, on arrival: a request that got in before the shutdown signal is served to the end
            response = _error_response(OverloadedError("the server is shutting down; retry on another instance"))
        else:
            metrics.in_flight.inc()
            admitted = request.url.path.startswith("/v1/")
            state.admitted += admitted
            try:
                response = await call_next(request)
            except Exception as exc:  # noqa: BLE001 - a bug: answered (500, no internals), logged and counted
                log.exception("unexpected error serving %s", request.url.path)
                response = _error_response(exc)
            finally:
                metrics.in_flight.dec()
                state.admitted -= admitted
        metrics.observe(request.url.path if request.url.path.startswith("/v1/") else "other",
                        response.status_code, time.perf_counter() - t0, response.headers.get("x-c4u-error"))
        return response

    @app.exception_handler(C4UError)
    async def c4u_error(request: Request, exc: C4UError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(InvalidInputError(_describe(exc.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return JSONResponse({"error": {"type": kind, "message": str(exc.detail)}}, status_code=exc.status_code,
                            headers={**(exc.headers or {}), "X-C4U-Error": kind})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error_response(exc)

    def authorized(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.post("/v1/select", dependencies=[Depends(authorized)], openapi_extra=_select_openapi())
    async def select(request: Request) -> dict[str, Any]:
        req = await _read_select(request, limits, engine.max_candidates)
        body = req.body
        selection = await engine.select_async(
            req.images, body.profile.model_dump(), mode=body.mode, strategy=body.strategy,
            both_orders=body.both_orders, orders=body.orders, top_k=body.top_k, max_new_tokens=body.max_new_tokens,
            strict=body.strict, timeout=body.timeout_s, screen=req.screen, product_image=req.product,
            screen_mode=body.screen_mode)
        return selection_json(selection, req.names)

    @app.post("/v1/compare", dependencies=[Depends(authorized)],
              openapi_extra=_model_openapi(CompareIn, ComparisonOut))
    async def compare(request: Request) -> dict[str, Any]:
        body = _validate(CompareIn, await request.body())
        a, b = (_decode_image(s, f"image_{k}", limits) for s, k in ((body.image_a, "a"), (body.image_b, "b")))
        comparison = await engine.compare_async(a, b, body.profile.model_dump(), mode=body.mode,
                                                max_new_tokens=body.max_new_tokens, timeout=body.timeout_s)
        return comparison_json(comparison)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.ready and not state.draining:
            return JSONResponse({"status": "ready", "backend": engine.backend, "device": engine.device})
        return JSONResponse({"status": "draining" if state.draining else "starting"}, status_code=503,
                            headers=retry_headers(503))

    @app.get("/metrics", dependencies=[Depends(authorized)])
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


# -- requests -----------------------------------------------------------------------------------------------
async def _read_select(request: Request, limits: ServerLimits, max_candidates: int) -> _SelectRequest:
    """The request with its images' and product image's bytes. The product image goes through the candidates' path
    and limits: base64 or an uploaded file, never a path or URL read here."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:  # files: the candidates, the product image, and one more to tell "too many" apart
            form = await request.form(max_files=max_candidates + 2, max_fields=8, max_part_size=limits.max_image_bytes)
        except HTTPException as exc:  # the multipart parser's limits: too many files or fields, a part too large
            raise LimitExceededError(f"multipart request: {exc.detail} (at most {max_candidates} images of "
                                     f"{limits.max_image_bytes} bytes)") from None
        try:
            files = form.getlist("images")
            raw = form.get("request") or "{}"
            if not isinstance(raw, str):
                raise InvalidInputError("request: the multipart field 'request' must be JSON text, not a file")
            req = _SelectRequest(_validate(SelectIn, raw))
            for name in ("images", "product_image"):
                if getattr(req.body, name):
                    raise InvalidInputError(f"{name}: send it as a file in a multipart request, not in 'request'")
            for k, f in enumerate(files):
                req.images.append(await _read_file(f, f"images[{k}]", limits))
                req.names.append(f.filename or None)
            products = form.getlist("product_image")
            if len(products) > 1:
                raise InvalidInputError(f"product_image: one file, not {len(products)}")
            if products:
                req.product = await _read_file(products[0], "product_image", limits)
        finally:
            await form.close()
        return req
    body = _validate(SelectIn, await request.body())
    if len(body.images) > max_candidates:
        raise LimitExceededError(f"{len(body.images)} candidates exceed max_candidates={max_candidates}")
    return _SelectRequest(body, [_decode_image(s, f"images[{k}]", limits) for k, s in enumerate(body.images)],
                          [None] * len(body.images),
                          None if body.product_image is None else _decode_image(body.product_image, "product_image",
                                                                                limits))


async def _read_file(part: Any, where: str, limits: ServerLimits) -> bytes:
    """An uploaded file's bytes, within the per-image limit."""
    if isinstance(part, str):
        raise InvalidInputError(f"{where}: must be an uploaded file")
    data = await part.read(limits.max_image_bytes + 1)
    _check_image_size(len(data), where, limits)
    return data


def _validate(model: type[BaseModel], raw: bytes | str) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidInputError(_describe(exc.errors())) from None


def _describe(errors: list[dict]) -> str:
    parts = []
    for e in errors[:8]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _decode_image(text: str, where: str, limits: ServerLimits) -> bytes:
    if text.startswith("data:") and ";base64," in text[:100]:
        text = text.split(";base64,", 1)[1]
    _check_image_size(len(text) * 3 // 4, where, limits)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"{where}: not valid base64 (images travel as base64 bytes, never as paths or "
                                "URLs)") from None


def _check_image_size(n: int, where: str, limits: ServerLimits) -> None:
    if n > limits.max_image_bytes:
        raise LimitExceededError(f"{where}: {n} bytes exceed the per-image limit of {limits.max_image_bytes}")


def _error_response(exc: BaseException) -> JSONResponse:
    status = error_status(exc)
    body = error_json(exc)
    return JSONResponse(body, status_code=status,
                        headers={**retry_headers(status), "X-C4U-Error": body["error"]["type"]})


def _warm_up(engine) -> None:
    side = 56
    images = [np.full((side, side, 3), v, np.uint8) for v in (40, 200)]
    engine.select(images, {"title": "warm-up"}, use_cache=False)


def _model_openapi(model: type[BaseModel], answer: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": openapi_schema(model)}}},
            "responses": {"200": {"content": {"application/json": {"schema": openapi_schema(answer)}}}}}


def _select_openapi() -> dict[str, Any]:
    spec = _model_openapi(SelectIn, SelectionOut)
    spec["requestBody"]["content"]["multipart/form-data"] = {"schema": {
        "type": "object",
        "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                       "product_image": {"type": "string", "format": "binary",
                                         "description": "the product cut-out for screening (implies screening)"},
                       "request": {"type": "string",
                                   "description": "SelectIn as JSON, without images and product_image"}},
        "required": ["images"]}}
    return spec


# -- a body limit, checked as the body streams in --------------------------------------------------------------
class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: 413 when Content-Length or the streamed body exceeds max_bytes."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send) -> None:
        body = json.dumps({"error": {"type": "LimitExceededError",
                                     "message": f"request body exceeds {self.max_bytes} bytes"}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"x-c4u-error", b"LimitExceededError")]})
        await send({"type": "http.response.body", "body": body})
