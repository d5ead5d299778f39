"""Usability screening before selection (RFNet-style; JD, ECCV 2024): is a generated ad usable at all?

The runtime (`Screener`, onnxruntime + numpy + Pillow) never imports torch; `c4u_engine.screening.reward` (the
RFFT reward for fine-tuning a generator) is the torch side and is imported on its own.
"""

from c4u_engine.screening.screener import ScreeningResult, Screener, Verdict, screen_candidates

__all__ = ["ScreeningResult", "Screener", "Verdict", "screen_candidates"]
