"""c4u_engine: pick the advertising creative a user is most likely to click, with a Qwen2.5-VL-family judge."""

from c4u_engine._version import __version__
from c4u_engine import errors

__all__ = ["__version__", "errors"]
