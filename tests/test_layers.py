"""The layers of DESIGN.md hold: no module of c4u_engine imports from a layer above its own (function-level imports
included), and the public face reaches the engine only through its core."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "c4u_engine"
# lowest first; a module may import from its own layer and the ones below it
LAYERS = [
    {"errors", "_version", "comparison", "imaging", "profile", "builtin", "_C", "_C_emulated"},  # shared values
    {"ops"},
    {"models"},
    {"runners"},
    {"engine"},
    {"screening"},
    {"selection"},
    {"data"},
    # the engine's users: the public face, its tools, and training (which evaluates through the public Engine)
    {"__init__", "api", "cli", "export_command", "serving", "batch", "info", "reproduce", "train"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _layer(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("c4u_engine")]
        elif isinstance(node, ast.ImportFrom) and node.module == "c4u_engine":  # from c4u_engine import _C
            found += [(node.lineno, f"c4u_engine.{a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("c4u_engine.") \
                and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_every_module_has_a_layer():
    unknown = {_layer("c4u_engine." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts))
               for p in PACKAGE.rglob("*.py")} - set(RANK)
    assert not unknown, f"modules outside DESIGN.md's layers: {sorted(unknown)}"


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mine = _layer("c4u_engine." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for line, module in _imports(path):
            theirs = _layer(module)
            if RANK.get(theirs, -1) > RANK[mine]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({mine}) imports {module} ({theirs})")
    assert not upward, "imports up a layer:\n" + "\n".join(upward)


def test_the_public_face_reaches_the_engine_only_through_its_core():
    allowed = {"c4u_engine.engine.core", "c4u_engine.engine.config"}
    found = [module for _, module in _imports(PACKAGE / "api.py") if module.startswith("c4u_engine.engine")]
    assert found and set(found) <= allowed, found
