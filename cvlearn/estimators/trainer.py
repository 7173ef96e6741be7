"""Resumable training runs: one checkpoint file per run, written atomically, refused when another run wrote it.

Shared by the VAMPNet, denoising and fine-tuning estimators: each keeps its own state dict and format tag;
loading checks the tag and that every setting that shapes the run is unchanged, so a resumed run is the run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cvlearn.io import atomic_path


def save_run_state(path: Path, state: dict) -> None:
    """Write ``state`` (weights, optimizer, RNG, history, ...) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_run_state(path: Path, *, fmt: str, config: dict, device, what: str) -> dict:
    """Read a run checkpoint; raise if it is unreadable, of another format, or written with other settings."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # torch raises many types for unreadable files; keep the cause
        raise ValueError(f"checkpoint_path {str(path)!r}: not a readable {what} checkpoint ({err})") from err
    if not isinstance(state, dict) or state.get("format") != fmt:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"checkpoint_path {str(path)!r}: expected format {fmt!r}, found {found!r}")
    diff = {k: (v, state["config"].get(k)) for k, v in config.items() if state["config"].get(k) != v}
    if diff:
        raise ValueError(f"checkpoint_path {str(path)!r} was written by a different run; "
                         + "; ".join(f"{k}: expected {a!r}, found {b!r}" for k, (a, b) in diff.items()))
    return state
