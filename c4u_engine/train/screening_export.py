"""Write a screening model directory: rfnet.onnx (probabilities, for the onnxruntime runtime), rfnet.safetensors
(the torch weights, for the RFFT reward) and screen_config.json (shapes, classes, threshold; checked on load)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from c4u_engine.screening.classes import CLASSES
from c4u_engine.screening.model_dir import CONFIG_FILE, FORMAT, ONNX_FILE, WEIGHTS_FILE
from c4u_engine.screening.rfnet import RFNet

INPUTS = ("generated", "product", "text", "has_product")


class _Probabilities(torch.nn.Module):
    def __init__(self, net: RFNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, generated, product, text, has_product):
        return self.net(generated, product, text, has_product).softmax(-1)


def export_screening(net: RFNet, out_dir: str | Path, *, threshold: float = 0.5, metrics: dict | None = None,
                     opset: int = 17, reject_below: float | None = None) -> Path:
    """The model directory for `net`. reject_below: P(available) below which a candidate is screened out (between
    it and `threshold`: kept and flagged); None: the threshold (no band; screening_eval --choose-bound picks one)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = net.config
    was_training = net.training
    net = net.eval()
    # Traced with a batch of 2 ads and one product: the product's batch is its own axis (1, or one per ad).
    args = (torch.zeros(2, 4, c.side, c.side, dtype=torch.uint8), torch.zeros(1, 4, c.side, c.side, dtype=torch.uint8),
            torch.ones(1, c.text_len, dtype=torch.int64), torch.ones(1, dtype=torch.float32))
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        traced = Path(tmp) / ONNX_FILE
        torch.onnx.export(_Probabilities(net), args, str(traced), input_names=list(INPUTS), output_names=["probs"],
                          dynamic_axes={"generated": {0: "batch"}, "probs": {0: "batch"}, "product": {0: "products"},
                                        "text": {0: "products"}, "has_product": {0: "products"}}, opset_version=opset,
                          dynamo=False, do_constant_folding=True)
        (out / ONNX_FILE).write_bytes(traced.read_bytes())
    net.train(was_training)  # torch.onnx.export left it in training mode (batch-norm on batch statistics)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(out / WEIGHTS_FILE))
    config = {"format": FORMAT, "classes": list(CLASSES), "side": c.side, "text_len": c.text_len,
              "text_vocab": c.text_vocab, "threshold": threshold, "model": c.to_dict(), "inputs": list(INPUTS)}
    if reject_below is not None:
        config["reject_below"] = reject_below
    if metrics:
        config["measured"] = metrics
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out
