"""`c4u serve`: one Engine behind the HTTP API on uvicorn, with graceful shutdown.

On SIGTERM (or SIGINT) the server stops admitting (requests that still arrive on open connections get 503 with
Retry-After, /readyz turns 503), lets every admitted request finish within `grace_s`, then exits with status 0.
"""

from __future__ import annotations

import signal
from pathlib import Path

import uvicorn

from c4u_engine.serving.app import ServerLimits, create_app


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the app to refuse new work the moment a shutdown signal arrives."""

    def __init__(self, config: uvicorn.Config, app) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig, frame) -> None:
        self._app.state.c4u.draining = True
        super().handle_exit(sig, frame)


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
                 grace_s: float = 30.0, limits: ServerLimits = ServerLimits(), log_level: str = "info",
                 warm: bool = True) -> DrainingServer:
    app = create_app(engine, api_key=api_key, limits=limits, warm=warm, close_engine=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=grace_s,
                            lifespan="on", access_log=False)
    return DrainingServer(config, app)


def serve(engine, **options) -> int:
    """Run until a shutdown signal; returns the process exit status (0 after a graceful shutdown)."""
    server = build_server(engine, **options)
    # uvicorn hands a captured SIGTERM/SIGINT back to the previous handler once it has shut down; with the default
    # handler that kills the process (status -15) after the graceful part. The shutdown is done by then: ignore it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    return 0 if server.started else 1
