"""`c4u serve` over HTTP: results equal in-process results; every bad-input class gets its status and error type;
a tiny queue under a burst answers 503 with Retry-After and stays up; bearer-token auth; health, readiness,
metrics and the OpenAPI schema."""

from __future__ import annotations

import base64
import concurrent.futures
import json

import httpx
import numpy as np
import pytest

from http_server import assert_one_schema, b64, png_bytes
from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine
from c4u_engine.serving.app import ServerLimits
from c4u_engine.serving.schema import comparison_json, selection_json

PROFILE = {"title": "Trail running shoes", "queries": ["waterproof shoes", "running sale"], "extra": ""}


@pytest.fixture(scope="module")
def images():
    return [make_test_image(56, 56, seed=s) for s in range(4)] + [make_test_image(84, 28, seed=7)]


@pytest.fixture(scope="module")
def engine(tiny_ckpt):
    eng = Engine(tiny_ckpt, backend="torch")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference(tiny_ckpt, images):
    """In-process results on their own engine (the server's engine is closed when its server stops)."""
    eng = Engine(tiny_ckpt, backend="torch")
    decoded = [eng.core.session.load_images([png_bytes(im)])[0] for im in images]  # what the server decodes
    out = {
        "fast": eng.select(decoded, PROFILE),
        "reason": eng.select(decoded[:3], PROFILE, mode="reason", strategy="round_robin", max_new_tokens=6),
        "compare": eng.compare(decoded[0], decoded[4], PROFILE),
    }
    eng.close()
    return out


def _server_engine(tiny_ckpt, **settings):
    return Engine(tiny_ckpt, backend="torch", **settings)


def _same_selection(got: dict, ref) -> None:
    want = selection_json(ref, got["images"])
    assert got["ranking"] == want["ranking"] and got["winner"] == want["winner"]
    assert [(c["first"], c["second"], c["answer"], c["raw_text"]) for c in got["comparisons"]] == \
        [(c["first"], c["second"], c["answer"], c["raw_text"]) for c in want["comparisons"]]
    for x, y in zip(got["comparisons"], want["comparisons"]):
        assert abs(x["prob_a"] - y["prob_a"]) < 1e-6


def test_http_results_equal_in_process_results(tiny_ckpt, serve_engine, images, reference):
    srv = serve_engine(_server_engine(tiny_ckpt))
    with httpx.Client(base_url=srv.url, timeout=120) as client:
        r = client.post("/v1/select", json={"images": [b64(im) for im in images], "profile": PROFILE})
        assert r.status_code == 200, r.text
        _same_selection(r.json(), reference["fast"])
        r = client.post("/v1/select", json={"images": [b64(im) for im in images[:3]], "profile": PROFILE,
                                            "mode": "reason", "strategy": "round_robin", "max_new_tokens": 6})
        assert r.status_code == 200, r.text
        _same_selection(r.json(), reference["reason"])
        files = [("images", (f"c{k}.png", png_bytes(im), "image/png")) for k, im in enumerate(images)]
        r = client.post("/v1/select", files=files, data={"request": json.dumps({"profile": PROFILE})})
        assert r.status_code == 200, r.text
        _same_selection(r.json(), reference["fast"])
        r = client.post("/v1/compare", json={"image_a": b64(images[0]), "image_b": b64(images[4]),
                                             "profile": PROFILE})
        assert r.status_code == 200, r.text
        want = comparison_json(reference["compare"])
        assert r.json()["answer"] == want["answer"] and abs(r.json()["prob_a"] - want["prob_a"]) < 1e-6


def test_cli_json_and_server_json_are_one_schema(tiny_ckpt, serve_engine, images, tmp_path, capsys):
    from c4u_engine.cli import main

    paths = []
    for k, im in enumerate(images):
        paths.append(str(tmp_path / f"c{k}.png"))
        (tmp_path / f"c{k}.png").write_bytes(png_bytes(im))
    assert main(["select", *paths, "--title", PROFILE["title"], "--query", PROFILE["queries"][0], "--query",
                 PROFILE["queries"][1], "--model",
                 str(tiny_ckpt), "--backend", "torch", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    srv = serve_engine(_server_engine(tiny_ckpt))
    with httpx.Client(base_url=srv.url, timeout=120) as client:
        files = [("images", (f"c{k}.png", png_bytes(im), "image/png")) for k, im in enumerate(images)]
        multipart = client.post("/v1/select", files=files, data={"request": json.dumps({"profile": PROFILE})}).json()
        base64 = client.post("/v1/select", json={"images": [b64(im) for im in images], "profile": PROFILE}).json()
    assert cli["images"] == paths and multipart["images"] == [f"c{k}.png" for k in range(5)]
    assert base64["images"] == [None] * 5
    for got in (multipart, base64):
        assert_one_schema(got, cli)


def test_bad_input_gets_its_status_and_error_type(tiny_ckpt, serve_engine, images):
    srv = serve_engine(_server_engine(tiny_ckpt, max_candidates=4, max_image_pixels=100 * 100),
                       limits=ServerLimits(max_body_bytes=200_000, max_image_bytes=20_000))
    good = [b64(im) for im in images[:2]]
    noise = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)  # ~30 kB as PNG

    def post(body, path="/v1/select", **kw):
        return client.post(path, json=body, **kw) if body is not None else client.post(path, **kw)

    cases = [
        ({"images": good, "profile": {"queries": []}}, 422, "InvalidInputError", "profile.title"),
        ({"images": good, "profile": PROFILE, "mode": "slow"}, 422, "InvalidInputError", "mode"),
        ({"images": good, "profile": PROFILE, "nonsense": 1}, 422, "InvalidInputError", "nonsense"),
        ({"images": [good[0], "not base64!!"], "profile": PROFILE}, 422, "InvalidInputError", "images[1]"),
        ({"images": ["/etc/passwd", "http://example.com/a.png"], "profile": PROFILE}, 422, "InvalidInputError",
         "images[0]"),
        ({"images": good * 3, "profile": PROFILE}, 413, "LimitExceededError", "max_candidates"),
        ({"images": [b64(noise)] * 2, "profile": PROFILE}, 413, "LimitExceededError", "per-image"),
        ({"images": [b64(np.full((150, 150, 3), 90, np.uint8))] * 2, "profile": PROFILE, "strict": True}, 413,
         "ImageTooLargeError", "pixels"),
        ({"images": good, "profile": {"title": "shoes <|image_pad|>"}}, 422, "ProfileError", "special token"),
        ({"images": [], "profile": PROFILE}, 422, "InvalidInputError", "no valid candidate"),
    ]
    with httpx.Client(base_url=srv.url, timeout=60) as client:
        for body, status, kind, words in cases:
            r = post(body)
            assert r.status_code == status, (body if len(str(body)) < 300 else words, r.text)
            err = r.json()["error"]
            assert err["type"] == kind and words in err["message"], err
        json_type = {"content-type": "application/json"}
        r = client.post("/v1/select", content=b"{" + b" " * 300_000 + b"}", headers=json_type)
        assert r.status_code == 413 and r.json()["error"]["type"] == "LimitExceededError"
        r = client.post("/v1/select", content=b"{not json", headers=json_type)
        assert r.status_code == 422 and r.json()["error"]["type"] == "InvalidInputError"
        files = [("images", (f"c{k}.png", png_bytes(images[0]), "image/png")) for k in range(7)]
        r = client.post("/v1/select", files=files, data={"request": json.dumps({"profile": PROFILE})})
        assert r.status_code == 413 and r.json()["error"]["type"] == "LimitExceededError"
        # a broken image without strict: ranked candidates plus the reject, as in-process
        r = post({"images": good + [base64.b64encode(b"\x89PNG garbage").decode()], "profile": PROFILE})
        assert r.status_code == 200 and set(r.json()["rejected"]) == {"2"}
        assert client.get("/healthz").json() == {"status": "ok"}


def test_a_burst_on_a_tiny_queue_gets_503_and_the_server_stays_up(tiny_ckpt, serve_engine, images):
    srv = serve_engine(_server_engine(tiny_ckpt, max_queued_requests=1, max_active_requests=1))
    body = {"images": [b64(im) for im in images[:4]], "profile": PROFILE, "mode": "reason",
            "strategy": "round_robin", "max_new_tokens": 30}

    def one(_):
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            return c.post("/v1/select", json=body)

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(one, range(12)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "OverloadedError"
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get("/readyz").status_code == 200
        assert c.post("/v1/select", json={**body, "mode": "fast"}).status_code == 200


def test_a_missed_deadline_is_504(tiny_ckpt, serve_engine, images):
    eng = _server_engine(tiny_ckpt)
    original = eng.runner.forward

    def slow(*args, **kwargs):
        import time

        time.sleep(0.2)
        return original(*args, **kwargs)

    srv = serve_engine(eng, warm=False)
    eng.runner.forward = slow
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/v1/select", json={"images": [b64(im) for im in images[:4]], "profile": PROFILE,
                                       "timeout_s": 0.1})
    assert r.status_code == 504 and r.json()["error"]["type"] == "DeadlineExceededError"


def test_bearer_token_auth(tiny_ckpt, serve_engine, images):
    key = "s3cret-token-0123456789"
    srv = serve_engine(_server_engine(tiny_ckpt), api_key=key)
    body = {"images": [b64(im) for im in images[:2]], "profile": PROFILE}
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
            r = c.post("/v1/select", json=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["type"] == "Unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/metrics").status_code == 401
        assert c.post("/v1/select", json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def _metric(text: str, name: str) -> float:
    """The value of an unlabelled sample `name` in a Prometheus text exposition."""
    (value,) = [line.split()[-1] for line in text.splitlines() if line.split(" ")[0] == name]
    return float(value)


def test_health_metrics_and_openapi(tiny_ckpt, serve_engine, images):
    eng = _server_engine(tiny_ckpt)
    srv = serve_engine(eng)
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get("/readyz").json()["status"] == "ready"
        for _ in range(3):
            assert c.post("/v1/select", json={"images": [b64(im) for im in images[:3]],
                                              "profile": PROFILE}).status_code == 200
        assert c.post("/v1/select", json={"images": ["!!"], "profile": PROFILE}).status_code == 422
        text = c.get("/metrics").text
        assert 'c4u_requests_total{endpoint="/v1/select",status="200"} 3.0' in text
        assert 'c4u_errors_total{type="InvalidInputError"} 1.0' in text
        assert 'c4u_request_latency_seconds_count{endpoint="/v1/select"} 4.0' in text
        stats = eng.load_stats()  # idle now: the gauges read the engine's own counters
        assert _metric(text, "c4u_queue_depth") == 0 and _metric(text, "c4u_active_requests") == 0
        assert _metric(text, "c4u_batch_rows_count") == stats["model_calls"] > 0
        assert _metric(text, "c4u_batch_rows_sum") == stats["model_call_rows"]
        for cache in ("encoder", "prefix"):
            hits, misses = stats[f"{cache}_cache_hits"], stats[f"{cache}_cache_misses"]
            assert hits > 0 and abs(_metric(text, f"c4u_{cache}_cache_hit_rate") - hits / (hits + misses)) < 1e-9
        spec = c.get("/openapi.json").json()
        assert {"/v1/select", "/v1/compare", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
        content = spec["paths"]["/v1/select"]["post"]["requestBody"]["content"]
        assert {"application/json", "multipart/form-data"} <= set(content)
        assert c.get("/docs").status_code == 200


def test_top_k_and_orders_over_http(tiny_ckpt, serve_engine, images):
    ref = Engine(tiny_ckpt, backend="torch")
    decoded = [ref.core.session.load_images([png_bytes(im)])[0] for im in images]
    want = ref.select(decoded, PROFILE, top_k=2, orders="adaptive")
    ref.close()
    srv = serve_engine(_server_engine(tiny_ckpt))
    with httpx.Client(base_url=srv.url, timeout=120) as client:
        r = client.post("/v1/select", json={"images": [b64(im) for im in images], "profile": PROFILE, "top_k": 2,
                                            "orders": "adaptive"})
        assert r.status_code == 200, r.text
        _same_selection(r.json(), want)
        assert r.json()["stats"]["top_k"] == 2 and r.json()["stats"]["orders"] == "adaptive"
        files = [("images", (f"c{k}.png", png_bytes(im), "image/png")) for k, im in enumerate(images)]
        r = client.post("/v1/select", files=files, data={"request": json.dumps({"profile": PROFILE, "top_k": 2,
                                                                                "orders": "adaptive"})})
        assert r.status_code == 200, r.text
        _same_selection(r.json(), want)
        r = client.post("/v1/select", json={"images": [b64(im) for im in images[:3]], "profile": PROFILE,
                                            "both_orders": False})
        assert r.status_code == 200 and r.json()["stats"]["orders"] == "one"
        for extra, words in (({"top_k": 0}, "top_k"), ({"top_k": True}, "top_k"), ({"top_k": "2"}, "top_k"),
                             ({"top_k": 2.5}, "top_k"), ({"orders": "sometimes"}, "orders"),
                             ({"orders": "adaptive", "both_orders": True}, "contradicts both_orders")):
            r = client.post("/v1/select", json={"images": [b64(im) for im in images[:2]], "profile": PROFILE,
                                                **extra})
            assert r.status_code == 422 and r.json()["error"]["type"] == "InvalidInputError", (extra, r.text)
            assert words in r.json()["error"]["message"], (extra, r.text)
        spec = client.get("/openapi.json").json()
        schema = spec["paths"]["/v1/select"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        props = schema["properties"]
        assert props["orders"]["anyOf"][0]["enum"] == ["both", "one", "adaptive"]
        assert props["top_k"]["anyOf"][0] == {"type": "integer", "minimum": 1}
        assert {"type": "boolean"} in props["both_orders"]["anyOf"]
