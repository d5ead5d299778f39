"""The serving tests' fixture: a server on 127.0.0.1 and a free port, run in a thread and stopped after the test."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
pytest.importorskip("httpx", reason="httpx is not installed")

from http_server import RunningServer  # noqa: E402


@pytest.fixture
def serve_engine():
    """serve_engine(engine, **options) -> RunningServer, stopped after the test."""
    started: list[RunningServer] = []

    def start(engine, **options) -> RunningServer:
        started.append(RunningServer(engine, **options))
        return started[-1]

    yield start
    for s in started:
        s.stop()
