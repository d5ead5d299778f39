"""Usability screening over HTTP, as select(..., screen=True, product_image=...) in-process: the screened-out come
back with their class and probability, the product image has the candidates' limits and is never a path or URL, a
request screened out entirely gets AllScreenedOutError's status and message, /openapi.json documents all of it, and
the answer is `c4u select --json`'s."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from http_server import assert_one_schema, b64, png_bytes

from c4u_engine.api import Engine
from c4u_engine.data.usability import sample
from c4u_engine.screening import Screener
from c4u_engine.serving.app import ServerLimits
from c4u_engine.serving.openapi import SelectionOut

SAMPLES = [sample(31, i) for i in range(6)]  # made by the usability generator: a rule, not a hand pick
TITLE = SAMPLES[0].text
IMAGES = [np.asarray(s.generated) for s in SAMPLES]
PRODUCT = np.asarray(SAMPLES[0].product)  # RGBA: the cut-out on transparency


@pytest.fixture(scope="module")
def probs(tiny_screen_dir):
    """The screener's probabilities for the candidates as the server decodes them (PNG is lossless)."""
    return Screener(tiny_screen_dir).probabilities(IMAGES, TITLE, PRODUCT)


@pytest.fixture(scope="module")
def bounds(probs):
    """(reject_below, threshold): the least usable candidate is screened out, the next two are kept but flagged,
    the other three are usable."""
    p = np.sort(probs[:, 0])
    return float(p[0] + p[1]) / 2, float(p[2] + p[3]) / 2


def _engine(tiny_ckpt, screener):
    return Engine(tiny_ckpt, backend="torch", screen_model=screener)


def _body(**extra):
    return {"images": [b64(im) for im in IMAGES], "profile": {"title": TITLE}, **extra}


def test_screening_keeps_the_usable_and_screens_out_the_unusable_with_class_and_probability(
        tiny_ckpt, tiny_screen_dir, serve_engine, probs, bounds):
    reject_below, threshold = bounds
    screener = Screener(tiny_screen_dir, threshold=threshold, reject_below=reject_below)
    order = [int(i) for i in np.argsort(probs[:, 0])]
    out, unsure = order[0], order[1:3]
    srv = serve_engine(_engine(tiny_ckpt, screener))
    with httpx.Client(base_url=srv.url, timeout=120) as client:
        json_answer = client.post("/v1/select", json=_body(product_image=b64(PRODUCT)))
        files = [("images", (f"ad{k}.png", png_bytes(im), "image/png")) for k, im in enumerate(IMAGES)]
        files.append(("product_image", ("cutout.png", png_bytes(PRODUCT), "image/png")))
        multipart = client.post("/v1/select", files=files,
                                data={"request": json.dumps({"profile": {"title": TITLE}, "screen": True})})
    for r in (json_answer, multipart):
        assert r.status_code == 200, r.text
        got = r.json()
        SelectionOut.model_validate(got)  # what /openapi.json documents
        assert set(got["rejected"]) == {str(out)} and got["rejected"][str(out)].startswith("unusable: ")
        assert set(got["flagged"]) == {str(i) for i in unsure}
        assert set(got["ranking"]) == set(range(6)) - {out}
        s = got["stats"]["screening"]
        assert s["mode"] == "image+product+text" and s["screened_out"] == [out] and s["flagged"] == sorted(unsure)
        assert set(s["verdicts"]) == {str(i) for i in [out, *unsure]}
        for i in [out, *unsure]:
            want = screener.verdict(probs[i])
            v = s["verdicts"][str(i)]
            assert v["status"] == ("unusable" if i == out else "uncertain") and v["label"] == want.label
            assert abs(v["probability"] - want.probability) < 1e-4 and abs(v["p_available"] - want.p_available) < 1e-4
            text = (got["rejected"] if i == out else got["flagged"])[str(i)]
            assert want.label.replace("_", " ") in text and f"p={want.probability:.2f}" in text
    assert multipart.json()["images"] == [f"ad{k}.png" for k in range(6)]


def test_a_bad_or_oversized_product_image_is_refused_naming_it(tiny_ckpt, tiny_screen_dir, serve_engine):
    candidates = sum(len(b64(im)) for im in IMAGES)
    big = png_bytes(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))  # ~49 kB
    medium = png_bytes(np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8))  # ~28 kB
    limits = ServerLimits(max_image_bytes=max(len(medium), *(len(png_bytes(im)) for im in IMAGES)) + 1000,
                          max_body_bytes=candidates + 20_000)
    assert len(big) > limits.max_image_bytes and candidates + len(b64(PRODUCT)) < limits.max_body_bytes
    srv = serve_engine(_engine(tiny_ckpt, Screener(tiny_screen_dir, threshold=0.01)), limits=limits)
    cases = [
        ({"product_image": "not base64!!"}, 422, "InvalidInputError", "product_image: not valid base64"),
        ({"product_image": "/tmp/cutout.png"}, 422, "InvalidInputError", "product_image: not valid base64"),
        ({"product_image": "https://example.com/cutout.png"}, 422, "InvalidInputError",
         "product_image: not valid base64"),
        # valid base64 that spells a path: decoded as bytes, never opened
        ({"product_image": "/etc/passwdx"}, 422, "ProductImageError", "cannot read the product image bytes"),
        ({"images": [b64(im) for im in IMAGES[1:3]], "product_image": base64.b64encode(big).decode()}, 413,
         "LimitExceededError", "product_image: "),  # a body within its limit, the product image over its own
        ({"product_image": base64.b64encode(medium).decode()}, 413, "LimitExceededError", "request body exceeds"),
        ({"screen": True, "screen_mode": "full"}, 422, "ProductImageError", "needs the product image"),
        ({"screen": False, "product_image": b64(PRODUCT)}, 422, "InvalidInputError", "screen=false"),
        ({"screen_mode": "pixels"}, 422, "InvalidInputError", "screen_mode"),
    ]
    with httpx.Client(base_url=srv.url, timeout=120) as client:
        for extra, status, kind, words in cases:
            r = client.post("/v1/select", json=_body(**extra))
            assert r.status_code == status, (str(extra)[:100], r.text)
            err = r.json()["error"]
            assert err["type"] == kind and words in err["message"], (str(extra)[:100], err)
        files = [("images", (f"ad{k}.png", png_bytes(im), "image/png")) for k, im in enumerate(IMAGES[:2])]
        r = client.post("/v1/select", files=[*files, ("product_image", ("cutout.png", big, "image/png"))],
                        data={"request": json.dumps({"profile": {"title": TITLE}})})
        assert r.status_code == 413 and r.json()["error"]["type"] == "LimitExceededError", r.text
        r = client.post("/v1/select", files=files,
                        data={"request": json.dumps({"profile": {"title": TITLE}, "product_image": b64(PRODUCT)})})
        assert r.status_code == 422 and "product_image: send it as a file" in r.json()["error"]["message"]
        # within the limits: screened (everything is usable under threshold 0.01), with or without the cut-out
        r = client.post("/v1/select", json=_body(product_image=b64(PRODUCT)))
        assert r.status_code == 200 and r.json()["stats"]["screening"]["mode"] == "image+product+text", r.text
        r = client.post("/v1/select", json=_body(screen=True))
        assert r.status_code == 200 and r.json()["stats"]["screening"]["mode"] == "image+text", r.text
        r = client.post("/v1/select", json=_body(product_image=b64(PRODUCT), screen_mode="text"))
        assert r.status_code == 200 and r.json()["stats"]["screening"]["mode"] == "image+text", r.text


def test_a_request_screened_out_entirely_gets_the_typed_error(tiny_ckpt, tiny_screen_dir, serve_engine):
    srv = serve_engine(_engine(tiny_ckpt, Screener(tiny_screen_dir, threshold=0.999)))
    with httpx.Client(base_url=srv.url, timeout=120) as client:
        r = client.post("/v1/select", json=_body(product_image=b64(PRODUCT)))
    assert r.status_code == 422 and r.headers["x-c4u-error"] == "AllScreenedOutError"
    err = r.json()["error"]
    assert err["type"] == "AllScreenedOutError" and "screening rejected every candidate" in err["message"]
    assert err["message"].count("unusable: ") == 6 and 'over HTTP, no "screen"' in err["message"]


def test_openapi_documents_the_screening_fields(tiny_ckpt, serve_engine):
    srv = serve_engine(Engine(tiny_ckpt, backend="torch"), warm=False)
    with httpx.Client(base_url=srv.url, timeout=60) as client:
        spec = client.get("/openapi.json").json()
    assert "#/$defs/" not in json.dumps(spec)  # every schema resolves inside the document
    op = spec["paths"]["/v1/select"]["post"]
    request = op["requestBody"]["content"]
    assert {"product_image", "screen", "screen_mode"} <= set(request["application/json"]["schema"]["properties"])
    assert request["application/json"]["schema"]["properties"]["screen_mode"]["enum"] == ["auto", "full", "text"]
    assert request["multipart/form-data"]["schema"]["properties"]["product_image"]["format"] == "binary"
    answer = op["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert {"rejected", "flagged", "stats"} <= set(answer)
    screening = next(s for s in answer["stats"]["properties"]["screening"]["anyOf"] if s.get("type") == "object")
    assert {"screened_out", "flagged", "verdicts"} <= set(screening["properties"])
    verdict = screening["properties"]["verdicts"]["additionalProperties"]["properties"]
    assert set(verdict) == {"status", "label", "probability", "p_available"}
    assert "shape_hallucination" in verdict["label"]["enum"] and "available" not in verdict["label"]["enum"]


def test_cli_json_and_server_json_are_one_schema_when_screened(tiny_ckpt, tiny_screen_dir, serve_engine, probs,
                                                               tmp_path, capsys):
    from c4u_engine.cli import main

    threshold = float(np.sort(probs[:, 0])[:2].mean())  # the CLI's one bound: the least usable is screened out
    paths = []
    for k, im in enumerate(IMAGES):
        paths.append(str(tmp_path / f"ad{k}.png"))
        (tmp_path / f"ad{k}.png").write_bytes(png_bytes(im))
    (tmp_path / "cutout.png").write_bytes(png_bytes(PRODUCT))
    assert main(["select", *paths, "--title", TITLE, "--product", str(tmp_path / "cutout.png"), "--model",
                 str(tiny_ckpt), "--backend", "torch", "--screen-model", str(tiny_screen_dir), "--screen-threshold",
                 str(threshold), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert list(cli["rejected"]) == [str(int(np.argmin(probs[:, 0])))]
    srv = serve_engine(_engine(tiny_ckpt, Screener(tiny_screen_dir, threshold=threshold)))
    with httpx.Client(base_url=srv.url, timeout=120) as client:
        r = client.post("/v1/select", json=_body(product_image=b64(PRODUCT)))
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["images"] == [None] * 6
    assert_one_schema(got, cli)
    assert got["stats"]["screening"]["verdicts"] == cli["stats"]["screening"]["verdicts"] != {}
