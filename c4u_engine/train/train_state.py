"""What SFT and GRPO share: the learning-rate schedule, resumable training states, progress and metric logs.

A state file (state_dir/step_0000500.pt) holds the model and optimizer state dicts, the step and the run's settings;
it is read back with torch.load(weights_only=True), which refuses arbitrary pickled objects. Everything random in a
run derives from (seed, step), so a run resumed from step N continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from c4u_engine.errors import InvalidInputError, ModelFormatError

T = TypeVar("T")

_STATE_FILE = re.compile(r"^step_(\d{7})\.pt$")


def cosine_lr(step: int, base_lr: float, total_steps: int, warmup_steps: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up to base_lr over warmup_steps, then cosine decay to base_lr * min_ratio at total_steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class RunConfig:
    """What every training stage's frozen dataclass config shares: its state directory (state_dir, else out_dir +
    "_state") and the settings a resumed run must repeat (the names in RUN_KEYS; tuples as lists, as JSON has them)."""

    RUN_KEYS: tuple[str, ...] = ()

    @property
    def states(self) -> Path:
        state_dir, out_dir = self.state_dir, self.out_dir
        return Path(state_dir) if state_dir else Path(str(out_dir).rstrip("/") + "_state")

    def run_settings(self) -> dict[str, Any]:
        values = {k: getattr(self, k) for k in self.RUN_KEYS}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


class ItemOrder(Generic[T]):
    """The items of step s: positions s*B .. s*B+B-1 of the endless sequence of per-epoch permutations (drawn
    from (seed, epoch), so any step's batch is known without replaying the run: what makes resuming exact)."""

    def __init__(self, items: Sequence[T], batch_size: int, seed: int) -> None:
        self.items, self.batch_size, self.seed = items, batch_size, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.items))}
        return self._perms[epoch]

    def batch(self, step: int) -> list[T]:
        n = len(self.items)
        out = []
        for position in range(step * self.batch_size, (step + 1) * self.batch_size):
            out.append(self.items[int(self._perm(position // n)[position % n])])
        return out


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases and norm scales)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95), eps=1e-8)


def state_files(state_dir: str | os.PathLike[str]) -> list[Path]:
    """The state files in state_dir, oldest step first."""
    root = Path(state_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if _STATE_FILE.match(p.name))


def save_state(state_dir: str | os.PathLike[str], step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               settings: dict[str, Any], keep: int = 2) -> Path:
    """Write step_{step}.pt atomically and delete all but the newest `keep` state files."""
    root = Path(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"step_{step:07d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "settings": json.dumps(settings, sort_keys=True)}, tmp)
    os.replace(tmp, path)
    for old in state_files(root)[:-keep]:
        old.unlink()
    return path


def load_latest_state(state_dir: str | os.PathLike[str], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      settings: dict[str, Any]) -> int:
    """Restore the newest state into model and optimizer and return its step (0 when there is none).

    Raises InvalidInputError when the state was written by a run with other settings (which would not resume the
    same run)."""
    files = state_files(state_dir)
    if not files:
        return 0
    try:
        state = torch.load(files[-1], map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which
        raise ModelFormatError(f"{files[-1]}: not a readable training state ({exc})") from None
    saved = json.loads(state["settings"])
    current = json.loads(json.dumps(settings, sort_keys=True))
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise InvalidInputError(f"{files[-1]}: cannot resume with different settings ({diffs})")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def check_fresh_start(state_dir: str | os.PathLike[str]) -> None:
    """Refuse to start over a run's states without --resume (it would silently mix two runs)."""
    files = state_files(state_dir)
    if files:
        raise InvalidInputError(f"{state_dir} already holds training states (newest {files[-1].name}); pass "
                                "resume=True (--resume) to continue that run, or choose another directory")


class Progress:
    """A tqdm bar when tqdm is installed and enabled, else one printed line every `every` steps (stderr)."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", enabled: bool = True, every: int = 10) -> None:
        self.total, self.step, self.desc, self.enabled, self.every = total, initial, desc, enabled, every
        self._bar = None
        self._start = time.perf_counter()
        self._start_step = initial
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)

    def update(self, metrics: dict[str, float]) -> None:
        self.step += 1
        if not self.enabled:
            return
        shown = {k: f"{v:.4g}" for k, v in metrics.items()}
        if self._bar is not None:
            self._bar.set_postfix(shown, refresh=False)
            self._bar.update(1)
        elif self.step % self.every == 0 or self.step == self.total:
            rate = (time.perf_counter() - self._start) / max(1, self.step - self._start_step)
            eta = rate * (self.total - self.step)
            text = " ".join(f"{k}={v}" for k, v in shown.items())
            print(f"{self.desc} {self.step}/{self.total} {text} ({rate:.2f} s/step, eta {eta / 60:.1f} min)",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def append_log(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """One JSON line of metrics."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def trim_log(path: str | os.PathLike[str], step: int) -> None:
    """Drop the log lines of steps after `step` (those a resumed run is about to redo)."""
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
