"""Learned CVs and the classic baselines through one switch, scored side by side on held-out trajectories.

Kinds: ``tica_torsions`` (deeptime TICA on sin/cos of backbone φ/ψ), ``vampnet_distances`` (VAMPNet on
pairwise distances of the distance atoms: heavy atoms, or Cα for big proteins — the classic VAMPNets
input), and GNN lobes ``gnn_sum`` / ``gnn_mlp_mixer`` / ``gnn_attention`` (Equivariant Transformer →
residue tokens → mixer → head). Every network gets the same head (MLP, ``head_hidden``) and optimizer
budget (learning rate, batch, epochs, patience); every model is scored by the VAMP-2 of its first ``dim``
outputs on the same test trajectories at the same lag.

Two protocols for the GNN lobes: end to end (the featurizer trains with the head) or ``frozen_featurizer``
(a pre-trained featurizer embeds every frame once; mixers and heads train on the stored tokens, as geom2vec
does). The frozen protocol costs one GNN forward per frame in all instead of a forward + backward per frame
per epoch, which is what makes 80-residue systems trainable on a CPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from cvlearn.models.cv import DistanceCV, GraphCV, TokenCV, embed_frames, fit_head_scaler
from cvlearn.data import lagged_pairs
from cvlearn.nn.heads import MLPHead
from cvlearn.estimators.scores import vamp_score
from cvlearn.nn.mixers import make_mixer
from cvlearn.nn.tokens import ResidueTokens
from cvlearn.estimators.multiseed import fit_seeds, model_outputs

logger = logging.getLogger(__name__)

KINDS = ("tica_torsions", "vampnet_distances", "gnn_sum", "gnn_mlp_mixer", "gnn_attention")
_MIXER_OF = {"gnn_sum": "sum", "gnn_mlp_mixer": "mlp_mixer", "gnn_attention": "attention"}


def backbone_torsion_features(traj) -> np.ndarray:
    """[T, 4 n] sin/cos of every backbone φ and ψ (mdtraj): the periodic-safe TICA input.

    Parameters
    ----------
    traj : mdtraj.Trajectory
        ``T`` frames of a protein/peptide with at least one φ or ψ.

    Returns
    -------
    np.ndarray
        ``[T, 2 (n_phi + n_psi)]``: sines of all φ then ψ, followed by their cosines (dimensionless).
    """
    import mdtraj

    angles = np.concatenate([mdtraj.compute_phi(traj)[1], mdtraj.compute_psi(traj)[1]], axis=1)
    if angles.shape[1] == 0:
        raise ValueError(f"traj: expected backbone φ/ψ torsions, found none in {traj.topology}")
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


@dataclass
class CompareData:
    """Per-trajectory inputs split by whole trajectories.

    Parameters
    ----------
    train, validation, test : dict of str to list of array
        Per split: ``positions`` (GNN atoms, ``[T_i, n_atoms, 3]`` nm), optionally ``distance_positions`` (atoms
        of the distance baseline, default the same) and ``torsions`` (``[T_i, 4 n_residues]`` sin/cos).
    atomic_numbers : list of int
        Of the GNN atoms.
    residue_of_atom : list of int
        Token (residue) index of each GNN atom.
    lagtime : int
        Lag time in frames.
    dim : int
        Number of CVs scored.
    dt_ps : float
        Time between frames, ps.
    notes : list of str
    """

    train: dict
    validation: dict
    test: dict
    atomic_numbers: list[int]
    residue_of_atom: list[int]
    lagtime: int  # frames
    dim: int
    dt_ps: float = 1.0
    notes: list[str] = field(default_factory=list)

    def get(self, split: str, key: str):
        part = getattr(self, split)
        if key == "distance_positions" and key not in part:
            key = "positions"
        if key not in part:
            raise ValueError(f"CompareData.{split}: expected inputs {key!r}, found {sorted(part)}")
        return part[key]


def build_lobe(kind: str, data: CompareData, *, featurizer_config=None, head_hidden: int = 64,
               seed: int = 0, mixer_kwargs: dict | None = None) -> torch.nn.Module:
    """The network for ``kind`` with ``data.dim`` outputs (seed the call for a reproducible init).

    Parameters
    ----------
    kind : str
        ``"vampnet_distances"`` or a GNN kind (``"gnn_sum"``, ``"gnn_mlp_mixer"``, ``"gnn_attention"``).
    data : CompareData
        Supplies atoms, residue map and ``dim``.
    featurizer_config : ETConfig, optional
        ET architecture of GNN kinds (default: 64 channels, 2 layers, 5 Å cutoff).
    head_hidden, seed : int
        Hidden width of the MLP head; seed of the featurizer's initial weights.
    mixer_kwargs : dict, optional
        Extra arguments of :func:`make_mixer`.

    Returns
    -------
    torch.nn.Module
        Positions ``[n_frames, n_atoms, 3]`` nm → ``[n_frames, data.dim]`` lobe outputs.
    """
    if kind == "vampnet_distances":
        n_atoms = data.get("train", "distance_positions")[0].shape[1]
        return DistanceCV(n_atoms, MLPHead(n_atoms * (n_atoms - 1) // 2, data.dim, hidden=head_hidden))
    if kind not in _MIXER_OF:
        raise ValueError(f"kind: expected one of {list(KINDS)}, found {kind!r}")
    from cvlearn.nn.featurizers import ETConfig, ETFeaturizer

    cfg = featurizer_config or ETConfig(hidden_channels=64, num_layers=2, num_rbf=32, cutoff_angstrom=5.0)
    top = token_lobe(kind, data, cfg.hidden_channels, head_hidden, mixer_kwargs)
    return GraphCV(ETFeaturizer(data.atomic_numbers, cfg, seed=seed), ResidueTokens(data.residue_of_atom), top.mixer,
                   top.head)


def token_lobe(kind: str, data: CompareData, width: int, head_hidden: int = 64,
               mixer_kwargs: dict | None = None) -> TokenCV:
    """Mixer + head of GNN ``kind`` on stored tokens of ``width`` channels (the frozen-featurizer protocol).

    Parameters
    ----------
    kind : str
        ``"gnn_sum"``, ``"gnn_mlp_mixer"`` or ``"gnn_attention"`` (4 heads unless ``mixer_kwargs`` says).
    data : CompareData
        Supplies the residue map (token count) and ``dim``.
    width, head_hidden : int
        Token features ``n_features`` and the head's hidden width.
    mixer_kwargs : dict, optional
        Extra arguments of :func:`make_mixer`.

    Returns
    -------
    TokenCV
        Tokens ``[n_frames, n_tokens, width]`` → ``[n_frames, data.dim]``.
    """
    if kind not in _MIXER_OF:
        raise ValueError(f"kind: expected one of {sorted(_MIXER_OF)}, found {kind!r}")
    n_tokens = max(data.residue_of_atom) + 1
    kwargs = dict(mixer_kwargs or {})
    if kind == "gnn_attention":
        kwargs.setdefault("n_heads", 4)
    return TokenCV(make_mixer(_MIXER_OF[kind], width, n_tokens=n_tokens, **kwargs), MLPHead(width, data.dim, hidden=head_hidden))


def tica_scores(data: CompareData) -> tuple[float, float, list[np.ndarray]]:
    """deeptime TICA on torsion features: (test VAMP-2 of the first ``dim`` ICs, seconds, test outputs).

    Parameters
    ----------
    data : CompareData
        Needs ``"torsions"`` in ``train`` and ``test``; TICA is fitted at ``data.lagtime`` frames.

    Returns
    -------
    score : float
        VAMP-2 of the test ICs at the same lag.
    seconds : float
        Wall time of fit and transform.
    outputs : list of np.ndarray
        Per test trajectory ``[T_i, dim]`` ICs.
    """
    from deeptime.decomposition import TICA

    started = time.perf_counter()
    train = [np.asarray(x, dtype=np.float64) for x in data.get("train", "torsions")]
    model = TICA(lagtime=data.lagtime, dim=data.dim).fit(train).fetch_model()
    out = [model.transform(np.asarray(x, dtype=np.float64))[:, :data.dim] for x in data.get("test", "torsions")]
    score = float(vamp_score(*lagged_pairs([torch.from_numpy(o) for o in out], data.lagtime)))
    return score, time.perf_counter() - started, out


def compare_models(data: CompareData, kinds: Sequence[str] = KINDS, seeds: Sequence[int] = (0, 1, 2), *,
                   featurizer_config=None, head_hidden: int = 64, learning_rate: float = 2e-3, batch_size: int = 512,
                   max_epochs: int = 30, patience: int = 8, score: str = "vamp2", device: str = "cpu",
                   progress: bool = False, mixer_kwargs: dict | None = None,
                   frozen_featurizer: torch.nn.Module | None = None) -> list[dict]:
    """Train and score every kind on the same data: one row per model.

    Parameters
    ----------
    data : CompareData
    kinds : sequence of str
        From ``KINDS``.
    seeds : sequence of int
    featurizer_config, head_hidden, mixer_kwargs
        Architecture of the lobes (see :func:`build_lobe`).
    learning_rate, batch_size, max_epochs, patience, score, device, progress
        Passed to :class:`~cvlearn.estimators.VAMPNet`.
    frozen_featurizer : torch.nn.Module, optional
        GNN lobes train on its tokens (embedded once, seconds in ``embed_seconds``).

    Returns
    -------
    list of dict
        Per model: test VAMP-2 mean ± std over seeds (TICA is deterministic: one value), seconds per seed,
        parameter count; also the models (``_models``) and test outputs of the first seed (``_outputs``).
    """
    rows = []
    frozen: dict = {}
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"kinds: expected names from {list(KINDS)}, found {kind!r}")
        logger.info("compare_models: %s", kind)
        if kind == "tica_torsions":
            value, seconds, out = tica_scores(data)
            rows.append({"name": kind, "vamp2_mean": value, "vamp2_std": 0.0, "values": [value], "seeds": [],
                         "seconds_per_seed": seconds, "n_params": 0, "_outputs": out, "_models": []})
            continue
        key = "distance_positions" if kind == "vampnet_distances" else "positions"
        train, val, test = (data.get(s, key) for s in ("train", "validation", "test"))
        is_frozen = frozen_featurizer is not None and kind in _MIXER_OF
        if is_frozen:
            if not frozen:
                started = time.perf_counter()
                tokens = ResidueTokens(data.residue_of_atom)
                frozen["parts"] = [embed_frames(frozen_featurizer, tokens, part) for part in (train, val, test)]
                frozen["seconds"] = time.perf_counter() - started
                logger.info("compare_models: embedded all frames once in %.1f s", frozen["seconds"])
            train, val, test = frozen["parts"]

            def make_lobe(seed, kind=kind):
                return token_lobe(kind, data, frozen_featurizer.hidden_channels, head_hidden, mixer_kwargs)
        else:
            def make_lobe(seed, kind=kind):
                return build_lobe(kind, data, featurizer_config=featurizer_config, head_hidden=head_hidden, seed=seed,
                                  mixer_kwargs=mixer_kwargs)
        frames = torch.cat(train)

        def prepare(lobe, frames=frames):
            sample = frames[torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))[:4096]]
            fit_head_scaler(lobe, sample)

        result = fit_seeds(make_lobe, train, val, seeds, test=test, dim=data.dim, prepare=prepare, lagtime=data.lagtime,
                           learning_rate=learning_rate, batch_size=batch_size, max_epochs=max_epochs,
                           patience=patience, score=score, device=device, progress=progress)
        n_params = sum(p.numel() for p in result.models[0].parameters())
        rows.append({"name": kind, "vamp2_mean": result.mean, "vamp2_std": result.std, "values": result.values,
                     "seeds": result.seeds, "val_vamp2": result.validation,
                     "protocol": "frozen featurizer" if is_frozen else "end to end",
                     **({"embed_seconds": frozen["seconds"]} if is_frozen else {}),
                     "seconds_per_seed": float(np.mean(result.seconds)), "n_params": int(n_params),
                     "_outputs": [o.numpy()[:, :data.dim] for o in model_outputs(result.models[0], test)],
                     "_models": result.models, "_histories": result.histories})
    return rows


def public_rows(rows: Sequence[dict]) -> list[dict]:
    """Rows without the private (model/array) entries, for JSON.

    Parameters
    ----------
    rows : sequence of dict
        Result rows of :func:`compare_models`; keys starting with ``_`` are private.

    Returns
    -------
    list of dict
        Shallow copies without the ``_`` keys.
    """
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def markdown_table(rows: Sequence[dict], title: str = "") -> str:
    """Markdown table of :func:`compare_models` rows: test VAMP-2 mean ± std, seeds, s/seed, parameter count.

    Parameters
    ----------
    rows : sequence of dict
        Result rows (need ``name``, ``values``, ``vamp2_mean``, ``vamp2_std``, ``seeds``, ``seconds_per_seed``,
        ``n_params``; ``protocol`` optional).
    title : str
        Bold line above the table; none when empty.

    Returns
    -------
    str
        The table, newline-terminated.
    """
    lines = ([f"**{title}**", ""] if title else []) + [
        "| model | protocol | test VAMP-2 (mean ± std) | seeds | s/seed | parameters |", "|---|---|---|---|---|---|"]
    for r in rows:
        n = len(r["values"])
        lines.append(f"| {r['name']} | {r.get('protocol', '-')} | {r['vamp2_mean']:.4f} ± {r['vamp2_std']:.4f} | "
                     f"{n if r['seeds'] else 'deterministic'} | {r['seconds_per_seed']:.1f} | {r['n_params']} |")
    return "\n".join(lines) + "\n"
