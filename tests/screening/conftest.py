"""A tiny randomly initialised screening model, exported once per session (torch + onnx, nothing downloaded)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_screen_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from c4u_engine.screening.rfnet import RFNet, RFNetConfig
    from c4u_engine.train.screening_export import export_screening

    torch.manual_seed(0)
    net = RFNet(RFNetConfig(dim=16, heads=2, fusion_layers=1))
    return export_screening(net, tmp_path_factory.mktemp("tiny_screen"), threshold=0.5)
