"""A transformers Qwen2.5-VL checkpoint -> llama.cpp's GGUF files (text model + mmproj), with llama.cpp's own converter.

    python benchmarks/llama_cpp_gguf.py CKPT --llama-cpp-dir DIR --outtype f32|q8_0 --out OUT_DIR

llama.cpp's `convert_hf_to_gguf.py` (and its `conversion/` package and `gguf-py/`) ship in llama.cpp's source tree,
not in the llama-cpp-python wheel; the llama-cpp-python sdist carries them under vendor/llama.cpp:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d DIR && tar xzf DIR/llama_cpp_python-*.tar.gz

Two things the converter cannot do on its own for a checkpoint it never saw, patched here at run time (its files
are never edited):
- it names the BPE pre-tokenizer from a hash of the tokens of a probe text and refuses any hash it does not know;
  a checkpoint with a tokenizer trained elsewhere (our benchmark's) has a new hash even when its pre-tokenizer is
  exactly Qwen2's. We read the pre-tokenizer from tokenizer.json and name it only where it is Qwen2's split regex
  plus byte-level ("qwen2" in llama.cpp); anything else still fails as the converter would.
- Qwen2-VL's set_vocab tries sentencepiece first and only catches FileNotFoundError; without the sentencepiece
  package that import fails with ImportError before the byte-level BPE path is tried.

Run as its own process (the converter imports torch and transformers; the benchmark's timed process should not).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Qwen2's pre-tokenizer split regex, as Qwen2.5 ships it in tokenizer.json (llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2)
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
OUTTYPES = ("f32", "q8_0")


class ConversionError(RuntimeError):
    """The checkpoint cannot be converted (says why)."""


def converter_dir(llama_cpp_dir: str | Path) -> Path:
    """The llama.cpp source directory holding convert_hf_to_gguf.py (the tree itself, or an sdist's root)."""
    root = Path(llama_cpp_dir)
    for candidate in (root, root / "vendor" / "llama.cpp"):
        if (candidate / "convert_hf_to_gguf.py").is_file() and (candidate / "gguf-py").is_dir():
            return candidate
    raise ConversionError(f"{root}: no convert_hf_to_gguf.py and gguf-py/ here or under vendor/llama.cpp "
                          "(see benchmarks/llama_cpp_gguf.py's docstring for where to get them)")


def pre_tokenizer_name(model_dir: Path) -> str | None:
    """llama.cpp's name for the checkpoint's BPE pre-tokenizer when we can tell it from tokenizer.json, else None."""
    try:
        pre = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return None
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds != ["Split", "ByteLevel"] or steps[1].get("use_regex", True):
        return None
    split = steps[0]
    if split.get("pattern", {}).get("Regex") == QWEN2_SPLIT_REGEX and split.get("behavior") == "Isolated" \
            and not split.get("invert", False):
        return "qwen2"
    return None


def _patch_converter(model_dir: Path) -> None:
    """The two run-time patches described in the module docstring (needs the converter on sys.path)."""
    from conversion.base import TextModel
    from conversion.qwenvl import Qwen2VLModel

    known_pre = TextModel.get_vocab_base_pre
    fallback = pre_tokenizer_name(model_dir)

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return known_pre(self, tokenizer)
        except NotImplementedError:
            if fallback is None:
                raise
            print(f"llama_cpp_gguf: pre-tokenizer hash unknown to the converter; tokenizer.json's pre-tokenizer is "
                  f"Qwen2's, converted as {fallback!r}", file=sys.stderr)
            return fallback

    def set_vocab(self) -> None:
        try:
            self._set_vocab_sentencepiece()
        except (FileNotFoundError, ImportError):  # upstream catches FileNotFoundError only
            self._set_vocab_gpt2()

    TextModel.get_vocab_base_pre = get_vocab_base_pre
    Qwen2VLModel.set_vocab = set_vocab


def convert(model_dir: str | Path, llama_cpp_dir: str | Path, outtype: str, out_dir: str | Path) -> tuple[Path, Path]:
    """(text model .gguf, mmproj .gguf) in out_dir, converted in a child process; existing files are kept."""
    import subprocess

    if outtype not in OUTTYPES:
        raise ConversionError(f"outtype must be one of {OUTTYPES}, got {outtype!r}")
    out_dir = Path(out_dir)
    model, mmproj = out_dir / f"model-{outtype}.gguf", out_dir / f"mmproj-{outtype}.gguf"
    if not (model.is_file() and mmproj.is_file()):
        cmd = [sys.executable, __file__, str(model_dir), "--llama-cpp-dir", str(llama_cpp_dir),
               "--outtype", outtype, "--out", str(out_dir)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ConversionError(f"llama.cpp's converter failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    return model, mmproj


def _convert_here(model_dir: Path, llama_cpp_dir: Path, outtype: str, out_dir: Path) -> None:
    src = converter_dir(llama_cpp_dir)
    sys.path[:0] = [str(src), str(src / "gguf-py")]
    import convert_hf_to_gguf  # noqa: E402  (llama.cpp's converter, found through sys.path above)

    _patch_converter(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for mmproj, name in ((False, "model"), (True, "mmproj")):
        target = out_dir / f"{name}-{outtype}.gguf"
        if target.is_file():
            continue
        partial = target.with_suffix(".partial")
        sys.argv = ["convert_hf_to_gguf.py", str(model_dir), "--outtype", outtype, "--outfile", str(partial)]
        sys.argv += ["--mmproj"] if mmproj else []
        convert_hf_to_gguf.main()
        written = partial if partial.is_file() else next(out_dir.glob(f"*{partial.stem}*"), None)
        if written is None:
            raise ConversionError(f"the converter wrote no {partial}")
        written.rename(target)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--llama-cpp-dir", type=Path, required=True)
    p.add_argument("--outtype", choices=OUTTYPES, default="f32")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    _convert_here(args.model_dir, args.llama_cpp_dir, args.outtype, args.out)


if __name__ == "__main__":
    main()
