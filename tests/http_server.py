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


def assert_one_schema(got: dict, cli: dict) -> None:
    """A /v1/select answer and `c4u select --json`'s output for the same request: the same keys in the same order,
    the same values (scores within float rounding; screening's stats but its timing)."""
    assert list(got) == list(cli)
    assert set(got["stats"]) == set(cli["stats"])
    assert set(got["comparisons"][0]) == set(cli["comparisons"][0])
    for key in ("winner", "ranking", "rejected", "duplicates", "flagged", "deciding_pairs", "explanation"):
        assert got[key] == cli[key], key
    assert got["scores"].keys() == cli["scores"].keys()
    assert all(abs(got["scores"][k] - cli["scores"][k]) < 1e-6 for k in cli["scores"])
    untimed = [{k: v for k, v in out["stats"].get("screening", {}).items() if k != "seconds"} for out in (got, cli)]
    assert untimed[0] == untimed[1]


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
