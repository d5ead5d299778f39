"""Ray Serve with 2 replicas on a local Ray instance serves the same results as the engine in-process, screened
selections (the product image, the verdicts) included."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from http_server import b64, free_port, png_bytes
from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine

PROFILE = {"title": "Trail running shoes", "queries": ["running sale"]}


@pytest.mark.ray
def test_two_replicas_serve_the_in_process_results(tiny_ckpt):
    import ray
    from ray import serve

    from c4u_engine.serving.ray_serve import build_app

    from c4u_engine.data.usability import sample

    images = [make_test_image(56, 56, seed=s) for s in range(4)]
    base = sample(4242, 0, label="available")  # the built-in screener (the replicas' default) on usability renders
    ads = [np.asarray(s.generated) for s in (base, sample(4242, 7, label="available"),
                                             sample(4242, 9, label="space_mismatch"))]
    cutout = np.asarray(base.product)
    eng = Engine(tiny_ckpt, backend="torch")
    want = eng.select([eng.core.session.load_images([png_bytes(im)])[0] for im in images], PROFILE)
    screened = eng.select(ads, {"title": base.text}, screen=True, product_image=cutout)
    eng.close()
    assert screened.rejected and screened.stats["screening"]["verdicts"]
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(str(tiny_ckpt), num_replicas=2, backend="torch", num_cpus=0.5), name="c4u",
                  route_prefix="/")
        assert serve.status().applications["c4u"].deployments["c4u"].replica_states.get("RUNNING") == 2
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            for _ in range(4):  # spread over both replicas
                r = c.post("/v1/select", json={"images": [b64(im) for im in images], "profile": PROFILE})
                assert r.status_code == 200, r.text
                got = r.json()
                assert got["ranking"] == want.ranking
                assert all(abs(x["prob_a"] - y.prob_a) < 1e-6 for x, y in zip(got["comparisons"], want.comparisons))
            r = c.post("/v1/select", json={"images": [b64(im) for im in ads], "profile": {"title": base.text},
                                           "product_image": b64(cutout)})
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["ranking"] == screened.ranking and got["rejected"] == screened.to_dict()["rejected"]
            assert got["stats"]["screening"]["verdicts"] == screened.to_dict()["stats"]["screening"]["verdicts"]
            assert c.get("/readyz").status_code == 200
    finally:
        serve.shutdown()
        ray.shutdown()
