"""benchmarks/bench_llama_cpp.py where llama.cpp is absent (CI never builds llama-cpp-python): without it, or with
one too old, the script says how to install it in one line and exits with status 2, before any heavy work; and the
converter patch names a tokenizer's pre-tokenizer only when it is exactly Qwen2's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_llama_cpp.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
from llama_cpp_gguf import QWEN2_SPLIT_REGEX, pre_tokenizer_name  # noqa: E402


def run_script(prelude: str, *args: str, env_path: Path | None = None) -> subprocess.CompletedProcess:
    """The script as `python bench_llama_cpp.py ARGS`, after `prelude` ran in the same interpreter."""
    code = (f"import runpy, sys\n{prelude}\nsys.argv = [{str(SCRIPT)!r}, *{list(args)!r}]\n"
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n")
    env = dict(os.environ)
    if env_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(env_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def check_refusal(done: subprocess.CompletedProcess, reason: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert reason in lines[0]
    assert "pip install 'c4u_engine[bench]'" in lines[0]
    assert done.stdout == ""


def test_without_llama_cpp_python_it_says_how_to_install_and_exits_2(tmp_path):
    # sys.modules[name] = None makes `import name` raise ImportError, as when the package is not installed
    done = run_script("sys.modules['llama_cpp'] = None", "--workdir", str(tmp_path / "work"))
    check_refusal(done, "llama-cpp-python is not installed (")
    assert not (tmp_path / "work").exists()  # refused before building anything


def test_an_old_llama_cpp_python_is_refused_with_its_version(tmp_path):
    fake = tmp_path / "site" / "llama_cpp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '0.3.9'\n")
    (fake / "mtmd_cpp.py").write_text("")
    done = run_script("", "--workdir", str(tmp_path / "work"), env_path=tmp_path / "site")
    check_refusal(done, "llama-cpp-python 0.3.9 is too old (need >= 0.3.36)")


def _write_tokenizer(path: Path, pre_tokenizer: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.json").write_text(json.dumps({"pre_tokenizer": pre_tokenizer}))
    return path


def _qwen_pre(regex: str = QWEN2_SPLIT_REGEX, use_regex: bool = False) -> dict:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}]}


def test_the_test_checkpoints_tokenizer_converts_as_qwen2(tmp_path):
    from tiny_checkpoint import write_tokenizer

    from c4u_engine.engine.chat_template import QWEN2_5_VL_CHAT_TEMPLATE

    write_tokenizer(tmp_path, QWEN2_5_VL_CHAT_TEMPLATE)
    assert pre_tokenizer_name(tmp_path) == "qwen2"


@pytest.mark.parametrize("pre", [
    _qwen_pre(regex=QWEN2_SPLIT_REGEX.replace(r"\p{N}|", r"\p{N}+|")),  # another split rule (e.g. digit runs)
    _qwen_pre(use_regex=True),  # byte-level splitting again with GPT-2's rule
    {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},  # plain GPT-2
    {"type": "Metaspace", "replacement": "\u2581"},
])
def test_any_other_pre_tokenizer_is_left_to_the_converter(tmp_path, pre):
    assert pre_tokenizer_name(_write_tokenizer(tmp_path, pre)) is None
