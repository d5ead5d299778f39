"""The package as a user installs it: `pip install .` into a fresh venv, then, outside the repository, `c4u export`
of the built-in model to int8 into a temporary directory and `c4u select --model` on what it wrote.

Kept cheap: the fresh venv borrows this environment's packages (numpy, onnxruntime, torch, onnx, ...) through a
.pth file instead of downloading them (`--no-deps`: the [export] extra's packages are those borrowed ones), and the
build runs without isolation in the build directory pyproject.toml names, which the editable install of the test
command has already compiled (CI: no compile; a first local run compiles _C once). The package itself really is
built and installed from the tree: the test checks that c4u_engine and export are imported from the fresh venv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from PIL import Image

from tiny_checkpoint import make_test_image

REPO = Path(__file__).resolve().parents[1]
BUILD_NEEDS = ("scikit_build_core", "pybind11")


def _skip_reason() -> str | None:
    missing = [m for m in BUILD_NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        return f"building the package needs {', '.join(missing)} here (the test extra installs them)"
    if shutil.which("cmake") is None:
        return "building the package needs cmake"
    for m in ("torch", "onnx", "onnxruntime"):
        if importlib.util.find_spec(m) is None:
            return f"c4u export needs {m} (the export extra)"
    return None


def _borrowed_paths() -> list[str]:
    """This interpreter's package directories, without the repository's tree (the fresh venv must import the
    installed package, not the tree). A venv inside the repository (CI's .venv) is still borrowed: its .pth files,
    the editable install's redirect among them, are not run from a borrowed path."""
    paths = []
    for p in [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path]:
        if not p or not Path(p).is_dir():
            continue
        resolved = Path(p).resolve()
        in_tree = resolved == REPO or (REPO in resolved.parents and "site-packages" not in resolved.parts)
        if in_tree or str(resolved) in paths:
            continue
        if resolved.name.endswith((".zip",)) or "lib-dynload" in resolved.parts:
            continue
        paths.append(str(resolved))
    return paths


@pytest.mark.slow
@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_pip_install_then_export_int8_and_select_outside_the_repository(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_borrowed_from_test_env.pth").write_text("\n".join(_borrowed_paths()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "C4U_CACHE_DIR": str(tmp_path / "cache")})
    work = tmp_path / "user"  # outside the repository: the tree is not importable from here
    work.mkdir()
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                              f"{REPO}[export]"], cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    where = subprocess.run([str(python), "-c", "import c4u_engine, export; print(c4u_engine.__file__); "
                            "print(export.__file__)"], cwd=work, env=env, capture_output=True, text=True, check=True)
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(venv.resolve()), where.stdout

    c4u = venv / "bin" / "c4u"
    engines = tmp_path / "engines" / "builtin-int8"
    export = subprocess.run([str(c4u), "export", "builtin", "--precision", "int8", "--out", str(engines)],
                            cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert export.returncode == 0, export.stdout[-3000:] + export.stderr[-3000:]
    manifest = json.loads((engines / "manifest.json").read_text())
    assert json.dumps(manifest).count("int8") >= 1 and (engines / "config.json").is_file()

    paths = []
    for i in range(3):
        paths.append(str(work / f"creative_{i}.png"))
        Image.fromarray(make_test_image(64, 64, seed=i)).save(paths[-1])
    select = subprocess.run([str(c4u), "select", *paths, "--title", "Trail running shoes", "--model", str(engines),
                             "--json"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert select.returncode == 0, select.stdout[-3000:] + select.stderr[-3000:]
    out = json.loads(select.stdout)
    assert out["images"] == paths and sorted(out["ranking"]) == [0, 1, 2]
    assert out["stats"]["precision"] == "int8" and out["stats"]["backend"] == "onnxruntime"
