"""`c4u serve`: one Engine behind the HTTP API on uvicorn, with graceful shutdown.

On SIGTERM (or SIGINT) the server stops admitting: it keeps its port open while the admitted requests finish
(within `grace_s`), answering every new /v1/ request 503 with Retry-After and /readyz 503, so that a load balancer
retries elsewhere instead of seeing refused connections; then it closes the port and exits with status 0. A second
signal skips the wait.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import uvicorn

from c4u_engine.serving.app import ServerLimits, create_app

DEFAULT_LIMITS = ServerLimits()  # frozen: one shared default is safe

log = logging.getLogger("uvicorn.error")  # uvicorn's own startup lines go there: ours sit beside them


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the app to refuse new work (503) the moment a shutdown signal arrives and shutting
    down (closing the port) only once the admitted requests are done or `grace_s` has passed."""

    def __init__(self, config: uvicorn.Config, app, grace_s: float = 30.0) -> None:
        super().__init__(config)
        self._app = app
        self._grace_s = grace_s
        self._drain_task: asyncio.Task | None = None

    def handle_exit(self, sig, frame) -> None:
        state = self._app.state.c4u
        if state.draining or self.should_exit:  # a second signal: stop waiting
            super().handle_exit(sig, frame)
            return
        state.draining = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the server's loop (no drain to wait for): shut down as uvicorn does
            super().handle_exit(sig, frame)
            return
        # a signal handler runs between two bytecodes of the loop's thread: schedule the wait, waking the loop
        loop.call_soon_threadsafe(self._start_drain, loop, sig, frame)

    def _start_drain(self, loop, sig, frame) -> None:
        self._drain_task = loop.create_task(self._drain_then_exit(sig, frame))

    async def _drain_then_exit(self, sig, frame) -> None:
        state = self._app.state.c4u
        deadline = time.monotonic() + self._grace_s
        while state.admitted > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        super().handle_exit(sig, frame)


def loaded_text(engine) -> str:
    """What a server loaded, in one line: the model, the runtime, the precision, the lanes."""
    return (f"model {engine.model_dir}, backend {engine.backend} on {engine.device}, precision {engine.precision}, "
            f"{engine.config.lanes} lane(s), at most {engine.config.max_active_requests} active and "
            f"{engine.config.max_queued_requests} queued requests")


def read_api_key(path: str | Path | None) -> str | None:
    """The bearer token from a file (first line, stripped); None without a file."""
    from c4u_engine.errors import InvalidInputError

    if path is None:
        return None
    try:
        key = Path(path).read_text(encoding="utf-8").strip().splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise InvalidInputError(f"--api-key-file {path}: cannot read a key ({exc or 'empty file'})") from None
    if len(key) < 16:
        raise InvalidInputError(f"--api-key-file {path}: the key must be at least 16 characters")
    return key


def build_server(engine, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                 grace_s: float = 30.0, limits: ServerLimits = DEFAULT_LIMITS, log_level: str = "info",
                 warm: bool = True) -> DrainingServer:
    app = create_app(engine, api_key=api_key, limits=limits, warm=warm, close_engine=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=grace_s,
                            lifespan="on", access_log=False)
    return DrainingServer(config, app, grace_s)


def serve(engine, **options) -> int:
    """Run until a shutdown signal; returns the process exit status (0 after a graceful shutdown)."""
    server = build_server(engine, **options)
    log.info("c4u serve: %s", loaded_text(engine))
    # uvicorn hands a captured SIGTERM/SIGINT back to the previous handler once it has shut down; with the default
    # handler that kills the process (status -15) after the graceful part. The shutdown is done by then: ignore it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    return 0 if server.started else 1
