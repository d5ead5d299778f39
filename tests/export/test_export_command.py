"""`c4u export`: the built-in model's engines go to a user directory, a missing export dependency names the extra,
and the help shows the defaults the code uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from c4u_engine.builtin import BUILTIN_DIR
from c4u_engine.cli import main
from c4u_engine.builtin import user_engine_dir
from c4u_engine.export_command import export_argv

REPO = Path(__file__).resolve().parents[2]


def test_the_builtin_model_is_exported_to_a_user_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("C4U_CACHE_DIR", str(tmp_path / "cache"))
    assert user_engine_dir("int4") == tmp_path / "cache" / "builtin-int4"
    assert export_argv(["builtin", "--precision", "int4"]) == [str(BUILTIN_DIR), "--precision", "int4", "--out",
                                                               str(tmp_path / "cache" / "builtin-int4")]
    assert export_argv(["--precision=int8", str(BUILTIN_DIR)])[-2:] == \
        ["--out", str(tmp_path / "cache" / "builtin-int8")]
    assert export_argv(["builtin", "--out", "/x"]) == [str(BUILTIN_DIR), "--out", "/x"]  # --out wins
    assert export_argv(["--opset", "17", "ckpt"]) == ["--opset", "17", "ckpt"]  # a checkpoint of one's own: as is
    monkeypatch.delenv("C4U_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_engine_dir("fp32") == tmp_path / "xdg" / "c4u_engine" / "builtin-fp32"


def test_the_runtime_points_at_c4u_export_and_the_user_directory_for_the_builtin_model(monkeypatch, tmp_path):
    from c4u_engine.errors import BackendUnavailableError
    from c4u_engine.runners import create_runner

    monkeypatch.setenv("C4U_CACHE_DIR", str(tmp_path))
    with pytest.raises(BackendUnavailableError) as info:
        create_runner(BUILTIN_DIR, backend="onnxruntime", precision="int4")
    message = str(info.value)
    assert f"c4u export builtin --precision int4 writes one to {tmp_path / 'builtin-int4'}" in message
    assert "python -m export" not in message and "site-packages" not in message


def test_a_missing_export_dependency_names_the_extra(tmp_path):
    # onnx made unimportable in a fresh interpreter: what a user without the export extra sees
    code = ("import sys; sys.modules['onnx'] = None; from c4u_engine.cli import main; "
            f"sys.exit(main(['export', 'builtin', '--precision', 'int8', '--out', {str(tmp_path / 'out')!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "BackendUnavailableError: c4u export needs onnx" in run.stderr
    assert "pip install 'c4u_engine[export]'" in run.stderr and "Traceback" not in run.stderr


def test_help_shows_the_defaults_the_code_uses(capsys):
    pytest.importorskip("onnx")
    from export.quantize import DEFAULT_FLOAT_KEPT

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: c4u export")
    assert f"(default: {','.join(DEFAULT_FLOAT_KEPT)};" in text
    assert "default: vision;" not in text
