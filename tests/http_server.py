"""Helpers for the serving tests: a free port on 127.0.0.1, images as PNG bytes and base64, and a server run in a
thread (stopped by the test). A module of its own: test directories each have a conftest, so `from conftest import`
would depend on collection order."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import numpy as np


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
