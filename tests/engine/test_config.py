"""EngineConfig: one validated value; Engine keyword settings override it, unknown names are refused."""

from __future__ import annotations

import pytest

from c4u_engine.api import Engine
from c4u_engine.engine.config import EngineConfig
from c4u_engine.errors import InvalidInputError


@pytest.mark.parametrize("bad", [dict(max_batch_rows=0), dict(max_queued_requests=0), dict(max_candidates=True),
                                 dict(prefix_cache_bytes=1.5), dict(default_timeout_s=0),
                                 dict(default_timeout_s=float("nan")), dict(max_active_requests=0)])
def test_bad_settings_are_refused_by_name(bad):
    with pytest.raises(InvalidInputError, match=next(iter(bad))):
        EngineConfig(**bad)


def test_engine_settings_override_the_config_and_are_used(tiny_ckpt):
    eng = Engine(tiny_ckpt, backend="torch", config=EngineConfig(max_candidates=3), prefix_cache_bytes=123)
    assert eng.config.max_candidates == 3 and eng.max_candidates == 3
    assert eng.config.prefix_cache_bytes == 123 and eng.core.lanes[0].store.capacity == 123
    assert eng.core.session.encoder_cache.capacity == EngineConfig().encoder_cache_bytes
    with pytest.raises(InvalidInputError, match="unknown engine settings"):
        Engine(tiny_ckpt, backend="torch", max_candidate=3)
    eng.close()
