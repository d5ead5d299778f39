"""Shared fixtures (tiny checkpoints built once per session) and the skip rules for `cuda` / `tensorrt` / `ray` tests.

Collection never touches a GPU: torch is imported only inside the collection hook, and only when some collected
test is marked `cuda`.

C4U_REQUIRE_CUDA=1 (benchmarks/gpu_suite.sh sets it) turns every skip of a `cuda`-marked test into a failure, whatever
skipped it (no CUDA build, no device, a skip inside the test): on a GPU machine a skipped kernel test is a test that
did not run, and must not read as a pass.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `from tiny_checkpoint import ...` in any test, any import mode

from tiny_checkpoint import make_tiny_checkpoint  # noqa: E402


def _cuda_skip_reason() -> str | None:
    """Why `cuda` tests cannot run here, or None when they can."""
    try:
        from c4u_engine import _C
    except ImportError as exc:
        return f"c4u_engine._C is not importable ({exc})"
    if not _C.with_cuda:
        return "c4u_engine._C was built without CUDA (no nvcc at build time, or C4U_CUDA=OFF)"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    if _C.cuda_device_count() < 1:
        return "c4u_engine._C sees no CUDA device"
    return None


def _tensorrt_skip_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # a broken install (missing libnvinfer) raises more than ImportError
        return f"tensorrt is not importable ({type(exc).__name__}: {exc})"
    return None


def _ray_skip_reason() -> str | None:
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any broken install is a reason to skip
        return f"ray[serve] is not importable ({type(exc).__name__}: {exc})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, reason_of in (("cuda", _cuda_skip_reason), ("tensorrt", _tensorrt_skip_reason),
                              ("ray", _ray_skip_reason)):
        marked = [item for item in items if item.get_closest_marker(marker) is not None]
        if not marked:
            continue  # no probe at all (no torch import) when nothing needs it
        reason = reason_of()
        if reason is not None:
            for item in marked:
                item.add_marker(pytest.mark.skip(reason=f"{marker}: {reason}"))


def cuda_required() -> bool:
    """C4U_REQUIRE_CUDA=1: `cuda` tests must run. Any other value than unset, "" or "0" is a typo and refused."""
    value = os.environ.get("C4U_REQUIRE_CUDA", "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(f"C4U_REQUIRE_CUDA must be 1 (cuda tests must run) or 0/unset, got {value!r}")
    return value == "1"


def pytest_configure(config: pytest.Config) -> None:
    cuda_required()  # a bad value stops the run before collection


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("cuda") is not None and cuda_required():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"C4U_REQUIRE_CUDA=1 but this cuda test was skipped: {reason}"


@pytest.fixture(scope="session")
def tiny_ckpt_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make_tiny_checkpoint(**kwargs), memoized per session by its arguments (each distinct one built once)."""
    built: dict[str, Path] = {}

    def factory(**kwargs) -> Path:
        key = json.dumps(kwargs, sort_keys=True, default=repr)
        if key not in built:
            built[key] = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_ckpt"), **kwargs)
        return built[key]

    return factory


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_ckpt_factory: Callable[..., Path]) -> Path:
    """The default tiny Qwen2.5-VL checkpoint directory (read-only by convention: copy it before editing files)."""
    return tiny_ckpt_factory()


@pytest.fixture(scope="session")
def tiny_screen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised screening model directory, exported once per session (torch + onnx, nothing
    downloaded); the screening and the serving tests use it."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from c4u_engine.screening.rfnet import RFNet, RFNetConfig
    from c4u_engine.train.screening_export import export_screening

    torch.manual_seed(0)
    net = RFNet(RFNetConfig(dim=16, heads=2, fusion_layers=1))
    return export_screening(net, tmp_path_factory.mktemp("tiny_screen"), threshold=0.5)
