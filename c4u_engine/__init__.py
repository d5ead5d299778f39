"""c4u_engine: pick the advertising creative a user is most likely to click, with a Qwen2.5-VL-family judge.

    import c4u_engine
    sel = c4u_engine.select(["a.png", "b.png", "c.png"], {"title": "Trail running shoes", "queries": ["sale"]})
    sel.winner, sel.ranking, sel.explanation
"""

from c4u_engine import errors
from c4u_engine._version import __version__
from c4u_engine.api import Engine, select, select_many
from c4u_engine.profile import Profile
from c4u_engine.selection.results import Comparison, Selection

__all__ = ["__version__", "errors", "Engine", "select", "select_many", "Profile", "Selection", "Comparison"]
