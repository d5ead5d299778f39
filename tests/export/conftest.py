"""export/ is a top-level package of the repo (and of the wheel, beside c4u_engine): make `import export` work in
these tests when they run from the tree without an install.

The repo root is appended (not prepended) to sys.path so the installed c4u_engine is never shadowed.
Keep tests/export free of __init__.py: with one, pytest would put tests/ on sys.path and `import export`
would find this test folder instead of the package.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
