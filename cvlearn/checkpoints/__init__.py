"""Checkpoints shipped with the package (no download at run time).

``et_denoise_small.pt``: an Equivariant Transformer with ``ETConfig()`` defaults (the demo featurizer's
architecture), denoising-pre-trained on the project's own MD corpus of capped amino acids and short peptides
(heavy atoms, σ = 0.2 Å). Its recipe is ``et_denoise_small.yaml`` next to it:
``cvlearn pretrain --config cvlearn/checkpoints/et_denoise_small.yaml --make-corpus``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_CHECKPOINT", "default_checkpoint", "default_recipe"]

_HERE = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = "et_denoise_small.pt"


def default_checkpoint() -> Path:
    """Path of the shipped pre-trained ET backbone, so the demo and tests need no download.

    Returns
    -------
    Path
        A cvlearn featurizer checkpoint; load it with ``cvlearn.nn.featurizers.load_featurizer_weights`` or
        ``featurizer_from_checkpoint``.

    Raises
    ------
    FileNotFoundError
        If the installation lacks the file (the message says how to rebuild it).
    """
    path = _HERE / DEFAULT_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"shipped checkpoint {path} is missing from this installation; rebuild it with "
                                f"`cvlearn pretrain --config {_HERE / 'et_denoise_small.yaml'} --make-corpus`")
    return path


def default_recipe() -> Path:
    """The pre-training config that reproduces ``default_checkpoint()``, so the shipped weights are reproducible.

    Returns
    -------
    Path
        ``et_denoise_small.yaml`` next to the checkpoint.
    """
    return _HERE / "et_denoise_small.yaml"
