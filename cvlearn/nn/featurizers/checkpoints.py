"""Strict loading of featurizer weights: geom2vec / torchmd-net state dicts and cvlearn's own checkpoints.

A checkpoint that does not fit fails loudly with the missing, unexpected and mis-shaped keys; nothing is
loaded partially. Keys outside the representation model (denoising heads, normalisers) are reported in the
log and left out on purpose: a featurizer needs only the backbone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

log = logging.getLogger(__name__)

# Prefixes under which geom2vec and torchmd-net store the GNN backbone.
REPRESENTATION_PREFIXES = ("model.representation_model.", "representation_model.")
CVLEARN_FORMAT = "cvlearn-featurizer-v1"


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the featurizer it is loaded into.

    Raised when a checkpoint file is unreadable or not a tensor dict, was trained with a periodic box, holds another
    architecture, or its keys/shapes do not match the featurizer's backbone.
    """


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files; keep the cause
        raise CheckpointMismatchError(f"checkpoint {path} could not be read as a torch state dict: {err}") from err
    if not isinstance(obj, dict):
        raise CheckpointMismatchError(f"checkpoint {path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def backbone_state_dict(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    """The representation-model tensors of a geom2vec / torchmd-net checkpoint, prefix stripped.

    Parameters
    ----------
    obj : dict
        The loaded checkpoint (optionally Lightning-nested under ``state_dict``).
    path : Path
        Its file, for messages.

    Returns
    -------
    dict of str to Tensor
        Backbone weights; a non-zero periodic ``distance.box`` raises CheckpointMismatchError.
    """
    state = obj.get("state_dict", obj)  # torchmd-net Lightning checkpoints nest the weights
    for prefix in REPRESENTATION_PREFIXES:
        backbone = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if backbone:
            left_out = sorted(k for k in state if not k.startswith(prefix))
            if left_out:
                log.info("%s: left out %d non-backbone entries (%s ...)", path, len(left_out), ", ".join(left_out[:4]))
            break
    else:
        backbone = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    box = backbone.pop("distance.box", None)
    if box is not None and bool(torch.any(box != 0)):
        raise CheckpointMismatchError(f"checkpoint {path} was trained with a periodic box {box.tolist()}; not supported")
    return backbone


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module`` only if keys and shapes match exactly; otherwise list what differs.

    Parameters
    ----------
    module : torch.nn.Module
        Target.
    state : dict of str to Tensor
        Weights.
    source : str
        What ``state`` came from, for the message.

    Raises
    ------
    CheckpointMismatchError
        Listing missing, unexpected and mis-shaped keys; nothing is loaded.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(
            f"{source} does not fit {type(module).__name__}:\n"
            f"  missing keys ({len(missing)}): {missing}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected}\n"
            f"  mis-shaped keys ({len(misshaped)}): {misshaped}"
        )
    module.load_state_dict(state, strict=True)


def load_featurizer_weights(featurizer: torch.nn.Module, path: str | Path, weight_free: Sequence[str] = ()) -> None:
    """Load backbone weights into ``featurizer`` (ET, ViSNet or TensorNet) from any supported checkpoint format.

    Supported: geom2vec / torchmd-net state dicts (``representation_model.*``, optionally Lightning-nested) and
    cvlearn's own checkpoints (architecture compared field by field first).

    Parameters
    ----------
    featurizer : FeaturizerBase
        Target; its ``gnn`` receives the weights.
    path : str or Path
        Checkpoint file.
    weight_free : sequence of str
        Architecture fields the caller sets on purpose although the checkpoint says otherwise, because the weights
        do not depend on them (ET's ``vector_cutoff``). A field the checkpoint predates counts as its default.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CheckpointMismatchError
        If the file is unreadable, holds another architecture, or its keys or shapes differ.
    """
    path = Path(path)
    load_read_weights(featurizer, _read(path), path, weight_free)


def load_read_weights(featurizer: torch.nn.Module, obj: dict, path: Path, weight_free: Sequence[str] = ()) -> None:
    """:func:`load_featurizer_weights` on a checkpoint already read (``obj``), so a caller that inspected the file
    does not read it again; ``path`` is for messages."""
    if obj.get("format") == CVLEARN_FORMAT:
        want = featurizer.config.as_dict()
        defaults = type(featurizer.config)().as_dict()
        have = {**{k: v for k, v in defaults.items() if k not in obj.get("config", {})}, **obj.get("config", {})}
        differ = {k: (have.get(k), want.get(k)) for k in set(want) | set(have)
                  if have.get(k) != want.get(k) and k not in weight_free}
        if obj.get("kind") != type(featurizer).__name__ or differ:
            raise CheckpointMismatchError(
                f"checkpoint {path} holds a {obj.get('kind')} with a different architecture "
                f"(key: (checkpoint, model)): {differ}"
            )
        load_strict(featurizer.gnn, obj["state_dict"], f"checkpoint {path}")
        return
    load_strict(featurizer.gnn, backbone_state_dict(obj, path), f"checkpoint {path}")


def save_featurizer_checkpoint(featurizer: torch.nn.Module, path: str | Path, **metadata) -> None:
    """Write a self-describing checkpoint (architecture, units, versions, backbone weights), so it loads strictly.

    Parameters
    ----------
    featurizer : FeaturizerBase
        Source of ``config`` and ``gnn`` weights.
    path : str or Path
        Output file (written atomically).
    **metadata
        Stored under ``metadata``.
    """
    from cvlearn import __version__
    from cvlearn.io import atomic_path

    payload = {
        "format": CVLEARN_FORMAT,
        "kind": type(featurizer).__name__,
        "config": featurizer.config.as_dict(),
        "units": {"positions_in": "nm", "inside": "angstrom"},
        "versions": {"cvlearn": __version__, "torch": str(torch.__version__)},
        "metadata": metadata,
        "state_dict": {k: v.detach().cpu() for k, v in featurizer.gnn.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
