"""One factory for all featurizers, so configs, checkpoints and the CLI name an architecture by a short kind."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cvlearn.nn.featurizers.equivariant_transformer import GEOM2VEC_ET, ETConfig, ETFeaturizer
from cvlearn.nn.featurizers.tensornet import GEOM2VEC_TENSORNET, TensorNetConfig, TensorNetFeaturizer
from cvlearn.nn.featurizers.visnet import GEOM2VEC_VISNET, ViSNetConfig, ViSNetFeaturizer

FEATURIZERS = {
    "et": (ETFeaturizer, ETConfig),
    "visnet": (ViSNetFeaturizer, ViSNetConfig),
    "tensornet": (TensorNetFeaturizer, TensorNetConfig),
}
GEOM2VEC_CONFIGS = {"et": GEOM2VEC_ET, "visnet": GEOM2VEC_VISNET, "tensornet": GEOM2VEC_TENSORNET}
# architecture fields a checkpoint's weights do not depend on (TensorNet has no such option: it is continuous)
WEIGHT_FREE = {"et": ("vector_cutoff",), "visnet": ("vector_cutoff",)}
_KIND_OF_CLASS = {cls.__name__: kind for kind, (cls, _) in FEATURIZERS.items()}


def kind_of(featurizer) -> str:
    """The registry kind of a featurizer instance, the short name configs and checkpoints use.

    Parameters
    ----------
    featurizer : FeaturizerBase
        An ET, ViSNet or TensorNet featurizer.

    Returns
    -------
    str
        ``"et"``, ``"visnet"`` or ``"tensornet"``.
    """
    name = type(featurizer).__name__
    if name not in _KIND_OF_CLASS:
        raise ValueError(f"featurizer: expected one of {sorted(_KIND_OF_CLASS)}, found {name}")
    return _KIND_OF_CLASS[name]


def make_featurizer(kind: str, atomic_numbers: Sequence[int], config=None, seed: int | None = 0):
    """Build a featurizer by its short kind, so configs and the CLI need not import the classes.

    Parameters
    ----------
    kind : {"et", "visnet", "tensornet"}
        Architecture.
    atomic_numbers : sequence of int
        Elements of the featurized atoms, n_atoms of them.
    config : dataclass, dict or None
        The kind's config dataclass, a dict of its fields (unknown keys raise ValueError), or None (defaults).
    seed : int or None
        Seed of the initial weights.

    Returns
    -------
    FeaturizerBase
        ``forward(positions_nm [n_frames, n_atoms, 3]) -> [n_frames, n_atoms, n_features]``.
    """
    if kind not in FEATURIZERS:
        raise ValueError(f"kind: expected one of {sorted(FEATURIZERS)}, found {kind!r}")
    cls, config_cls = FEATURIZERS[kind]
    if config is None:
        config = config_cls()
    elif isinstance(config, dict):
        unknown = sorted(set(config) - set(config_cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"config for {kind!r}: unknown keys {unknown}; expected a subset of "
                             f"{sorted(config_cls.__dataclass_fields__)}")
        config = config_cls(**config)
    elif not isinstance(config, config_cls):
        raise TypeError(f"config for {kind!r}: expected {config_cls.__name__} or dict, found {type(config).__name__}")
    return cls(atomic_numbers, config, seed=seed)


def load_geom2vec(kind: str, atomic_numbers: Sequence[int], path: str | Path, overrides: dict | None = None):
    """A featurizer with geom2vec's published architecture for ``kind`` and the weights in ``path`` (strict).

    Parameters
    ----------
    kind : {"et", "visnet", "tensornet"}
        Architecture.
    atomic_numbers : sequence of int
        Elements of the featurized atoms.
    path : str or Path
        A geom2vec / torchmd-net checkpoint.
    overrides : dict, optional
        Fields of :data:`WEIGHT_FREE` set differently from the published architecture (``{"vector_cutoff": True}``).

    Returns
    -------
    FeaturizerBase
        In eval mode.
    """
    from cvlearn.nn.featurizers.checkpoints import load_featurizer_weights

    if kind not in GEOM2VEC_CONFIGS:
        raise ValueError(f"kind: expected one of {sorted(GEOM2VEC_CONFIGS)}, found {kind!r}")
    overrides = _weight_free(kind, overrides)
    featurizer = make_featurizer(kind, atomic_numbers, {**GEOM2VEC_CONFIGS[kind].as_dict(), **overrides}, seed=None)
    load_featurizer_weights(featurizer, path)
    return featurizer.eval()


def _weight_free(kind: str, overrides: dict | None) -> dict:
    """``overrides`` checked against :data:`WEIGHT_FREE` (one line naming what is allowed)."""
    overrides = dict(overrides or {})
    allowed = WEIGHT_FREE.get(kind, ())
    if set(overrides) - set(allowed):
        raise ValueError(f"overrides: a {kind} checkpoint allows {list(allowed)} only, found {sorted(overrides)}")
    return overrides


def featurizer_from_checkpoint(path: str | Path, atomic_numbers: Sequence[int], overrides: dict | None = None):
    """Rebuild a featurizer from a cvlearn self-describing checkpoint (architecture read from the file).

    Parameters
    ----------
    path : str or Path
        A checkpoint written by ``save_featurizer_checkpoint``; plain state dicts raise CheckpointMismatchError.
    atomic_numbers : sequence of int
        Elements of the atoms to featurize (weights do not depend on them).
    overrides : dict, optional
        Fields of :data:`WEIGHT_FREE` set differently from the file (e.g. ``{"vector_cutoff": True}``: the ET made
        continuous at its cutoff); any other field raises ValueError.

    Returns
    -------
    FeaturizerBase
    """
    from cvlearn.nn.featurizers.checkpoints import load_read_weights

    kind, obj = _self_describing(path)
    overrides = _weight_free(kind, overrides)
    featurizer = make_featurizer(kind, atomic_numbers, {**dict(obj["config"]), **overrides}, seed=None)
    load_read_weights(featurizer, obj, Path(path), weight_free=tuple(overrides))
    return featurizer


def checkpoint_kind(path: str | Path) -> str:
    """The registry kind (``"et"``, ``"visnet"``, ``"tensornet"``) of a cvlearn self-describing checkpoint."""
    return _self_describing(path)[0]


def _self_describing(path: str | Path) -> tuple[str, dict]:
    """Kind and contents of a cvlearn checkpoint; anything else raises CheckpointMismatchError (one line)."""
    from cvlearn.nn.featurizers.checkpoints import CVLEARN_FORMAT, CheckpointMismatchError, _read

    obj = _read(Path(path))
    if obj.get("format") != CVLEARN_FORMAT:
        raise CheckpointMismatchError(f"checkpoint {path}: expected format {CVLEARN_FORMAT!r}, found {obj.get('format')!r} "
                                      "(plain state dicts do not say their architecture: use make_featurizer + "
                                      "load_featurizer_weights)")
    kind = _KIND_OF_CLASS.get(obj.get("kind"))
    if kind is None:
        raise CheckpointMismatchError(f"checkpoint {path}: unknown featurizer kind {obj.get('kind')!r}")
    return kind, obj
