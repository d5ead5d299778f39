"""A server on 127.0.0.1 and a free port, run in a thread and stopped by the test; images as base64."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
pytest.importorskip("httpx", reason="httpx is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def b64(image: np.ndarray) -> str:
    return base64.b64encode(png_bytes(image)).decode()


class RunningServer:
    def __init__(self, engine, **options) -> None:
        from c4u_engine.serving.server import build_server

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = build_server(engine, host="127.0.0.1", port=self.port, log_level="warning", **options)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


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
