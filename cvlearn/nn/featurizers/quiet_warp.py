"""Keep NVIDIA Warp's start-up banner off the terminal and out of batch logs.

torchmd-net imports ``warp`` for its neighbour-list kernels, and ``warp.init()`` prints a six-line greeting
(Warp has no environment variable for it; ``warp.config.log_level`` above ``LOG_INFO`` turns it off) and, on a
machine without a CUDA driver, a "Could not find or load the NVIDIA CUDA driver" line that its C++ core writes
straight to file descriptor 2. This module is imported by ``cvlearn.nn.featurizers`` before torchmd-net, so
every command and every library user that builds a featurizer gets a quiet start; any other text Warp writes
during start-up is passed on to stderr.
"""

from __future__ import annotations

import os
import sys
import tempfile

__all__ = ["quiet_warp"]

_DRIVER_LINE = "Could not find or load the NVIDIA CUDA driver"


def quiet_warp() -> None:
    """Initialise Warp (if installed) without its banner; a no-op when Warp is absent or already initialised."""
    try:
        import warp
    except ImportError:
        return
    warp.config.log_level = max(int(warp.config.log_level), int(warp.LOG_WARNING))
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (an embedded interpreter): only the banner is silenced
        warp.init()
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            warp.init()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    kept = [line for line in text.splitlines() if line.strip() and _DRIVER_LINE not in line]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")
