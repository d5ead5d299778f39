"""Planting faults in an exported engine directory, for the tests of what the runtime refuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def edit_manifest(engine_dir: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    """Rewrite engine_dir/manifest.json after `edit` changed its parsed object in place."""
    path = engine_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
