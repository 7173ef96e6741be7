"""Training and export of ``cvlearn learn``: embed once (frozen) or not (end to end), one VAMPNet per seed, export.

Every seed trains through :func:`cvlearn.estimators.fit_seeds` with its own checkpoint
(``<out>/seeds/seed<k>.ckpt``), so a killed run resumes inside a seed and a finished seed runs no epoch again.
Embedding and training run on ``config.device`` (:func:`cvlearn.distributed.rank_device`: under torchrun a bare
``cuda`` is each rank's own GPU); the store, the models handed on and the export are on the CPU.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from cvlearn.data import biased_pairs, embed_trajectories, frame_weights, self_pair_fraction, take_segments
from cvlearn.data.selection import atomic_numbers
from cvlearn.data.store import EmbeddingStore
from cvlearn.errors import ConfigError, RunError
from cvlearn.estimators.multiseed import fit_seeds, model_outputs
from cvlearn.estimators.scores import deeptime_vamp_score
from cvlearn.export import export_cv
from cvlearn.models.cv import GraphCV, TokenCV, fit_head_scaler
from cvlearn.nn.heads import MLPHead
from cvlearn.nn.mixers import make_mixer
from cvlearn.nn.windows import make_token_embedder

logger = logging.getLogger(__name__)

STORE_CHUNK_FRAMES = 1000


def _mixer_and_head(config, n_tokens: int, width: int):
    kwargs = {"n_heads": 4} if config.mixer == "attention" else {}
    return make_mixer(config.mixer, width, n_tokens=n_tokens, **kwargs), MLPHead(width, config.n_cvs,
                                                                                 hidden=config.head_hidden)


def _embed(config, plan, data, embedder, out: Path, progress: bool) -> list[torch.Tensor]:
    """Tokens of every frame from the store (``<out>/store`` or ``config.store``), embedding what is missing."""
    import mdtraj

    store_dir = Path(config.store) if config.store else out / "store"
    metadata = {"atom_indices": plan.atoms.tolist(), "selection": config.selection, "context": config.context,
                "half_width": config.half_width, "stride": config.stride, "periodic": data.periodic,
                "sources": [str(p) for p in plan.trajectories]}
    if config.store:
        store = EmbeddingStore(store_dir)
        s = store.settings
        # our stores hold the selected atoms (settings: all of them, None), the topology's indices in the metadata
        atoms = s["atom_indices"] if s["atom_indices"] is not None else s.get("metadata", {}).get("atom_indices")
        found = {"weights_sha256": s["weights_sha256"], "featurizers": s.get("featurizers"), "atom_indices": atoms,
                 "n_frames": [store.n_frames(i) for i in range(store.n_trajectories)]}
        from cvlearn.data.store import featurizer_configs, weights_sha256

        expected = {"weights_sha256": weights_sha256(embedder), "featurizers": featurizer_configs(embedder),
                    "atom_indices": plan.atoms.tolist(), "n_frames": data.n_frames}
        differ = [k for k in expected if found[k] != expected[k]]
        if differ:
            raise ConfigError(f"{store_dir}: expected a store of this featurizer, selection and frames, found other "
                              f"{differ}", key="store")
    else:
        sub = plan.topology.subset(plan.atoms)
        sources = [mdtraj.Trajectory(p.numpy(), sub, time=np.arange(len(p)) * data.frame_interval_ps)
                   for p in data.positions]
        embed_trajectories(embedder, sources, store_dir, chunk_frames=STORE_CHUNK_FRAMES, metadata=metadata,
                           progress=progress)
        store = EmbeddingStore(store_dir)
    return [torch.from_numpy(store.trajectory(i)) for i in range(store.n_trajectories)]


def fit_weights(config, plan, data) -> dict:
    """fit() keyword arguments for a biased run: frame weights or pairs on the rescaled time axis, per split."""
    if config.biased is None:
        return {}
    log_w = plan.log_weights
    if config.biased.method == "weights":  # one common shift over the frames used (not the transient left out)
        w = frame_weights(take_segments(log_w, [*data.train, *data.validation]))
        return {"train_weights": w[:len(data.train)], "validation_weights": w[len(data.train):]}
    pairs = {f"{part}_pairs": biased_pairs(take_segments(log_w, segments), data.frame_interval_ps, config.lagtime_ps,
                                           normalise=config.biased.normalise_time)
             for part, segments in (("train", data.train), ("validation", data.validation))}
    self_pairs = self_pair_fraction(pairs["train_pairs"])
    if self_pairs > 0.5:
        logger.warning("rescaled time: %.0f %% of the training pairs' weight pairs a frame with itself (the lag is "
                       "shorter than a typical frame on the rescaled axis); nothing slow can be learned from those",
                       100 * self_pairs)
    return pairs



def train_cv(config, plan, data, out: Path, seconds: dict, progress: bool) -> dict:
    """Train every seed, pick the best by validation VAMP-2, export ``<out>/cv.pt``; return results for the report."""
    from cvlearn import distributed

    device = distributed.rank_device(config.device)
    z = atomic_numbers(plan.topology, plan.atoms)
    frozen = config.protocol == "frozen"
    tick = time.perf_counter()
    if frozen:
        featurizer = config.featurizer.build(z, seed=config.seeds[0]).eval()
        embedder = make_token_embedder(featurizer, plan.topology, plan.atoms, config.context,
                                       config.half_width).to(device)
        inputs = _embed(config, plan, data, embedder, out, progress)
        embedder.requires_grad_(False)
    else:
        inputs = data.positions
    seconds["embed"] = time.perf_counter() - tick
    train, val = take_segments(inputs, data.train), take_segments(inputs, data.validation)

    def make_lobe(seed: int):
        if frozen:
            return TokenCV(*_mixer_and_head(config, embedder.n_tokens, embedder.hidden_channels))
        chain = make_token_embedder(config.featurizer.build(z, seed=seed), plan.topology, plan.atoms, config.context,
                                    config.half_width)
        return GraphCV(torch.nn.Identity(), chain, *_mixer_and_head(config, chain.n_tokens, chain.hidden_channels))

    frames = torch.cat(train)

    def prepare(lobe):
        fit_head_scaler(lobe, frames[torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))[:4096]])

    fit_kwargs = fit_weights(config, plan, data)
    smooth = {}
    if config.smoothness > 0:  # frozen: the penalty reaches the positions through the frozen embedder
        smooth = {"smoothness": config.smoothness, "smoothness_frames": config.smoothness_frames,
                  "smoothness_inputs": embedder if frozen else None}
        if frozen:
            fit_kwargs["train_positions"] = take_segments(data.positions, data.train)
    tick = time.perf_counter()
    seeds = []
    for seed in config.seeds:
        result = fit_seeds(make_lobe, train, val, [seed], prepare=prepare,
                           fit_kwargs={**fit_kwargs, "checkpoint_path": out / "seeds" / f"seed{seed}.ckpt"},
                           lagtime=data.lag, learning_rate=config.learning_rate, batch_size=config.batch_size,
                           max_epochs=config.max_epochs, patience=config.patience,
                           min_epochs=min(config.min_epochs, config.max_epochs), progress=progress, device=device,
                           **smooth)
        model, history = result.models[0].cpu(), result.histories[0]
        val_out = [o.numpy() for o in model_outputs(model, val)]
        biased = config.biased is not None
        seeds.append({"seed": int(seed), "model": model, "history": history,
                      # biased: the estimator's weighted validation VAMP-2; deeptime's VAMP has no weights
                      "vamp2_val": float(result.validation[0] if biased else result.values[0]),
                      "vamp2_val_deeptime": None if biased else float(deeptime_vamp_score(val_out, data.lag, r=2)),
                      "best_epoch": int(np.argmax([h["val_vamp2"] for h in history])) if history else -1,
                      "epochs": len(history), "train_seconds": float(sum(h["seconds"] for h in history))})
        logger.info("seed %d: validation VAMP-2 %.4f", seed, seeds[-1]["vamp2_val"])
    seconds["train"] = time.perf_counter() - tick
    best = max(seeds, key=lambda s: s["vamp2_val"])
    model = best["model"]
    check_has_components(model, config, best["vamp2_val"])
    if frozen:
        embedder.cpu()
        model = model.with_lobe(model.lobe.on_featurizer(torch.nn.Identity(), embedder))
    model.eval()
    outputs = [o.numpy() for o in model_outputs(best["model"], inputs)]
    tick = time.perf_counter()
    if distributed.is_rank0():  # under torchrun every rank holds the same model; one writes it
        _export(config, plan, data, model, best, outputs, out / "cv.pt")
    seconds["export"] = time.perf_counter() - tick
    return {"seeds": seeds, "best": best, "model": model, "outputs": outputs,
            "n_tokens": int(model.lobe.tokens.n_tokens)}


def check_has_components(model, config, vamp2_val: float) -> None:
    """RunError (one line) when the VAMP projection kept no component: export would fail deep inside on it."""
    if model.projection.shape[1] > 0:
        return
    hint = (" (biased data: the frame weights may be dominated by a few frames; a longer biased run or a lower "
            "barrier helps)" if config.biased is not None else "")
    raise RunError(f"the trained CV has no component: every VAMP singular value at lag {config.lagtime_ps:g} ps "
                   f"fell below epsilon (validation VAMP-2 {vamp2_val:.3f}), so the training pairs resolve no slow "
                   f"process{hint}")


def _export(config, plan, data, model, best, outputs, path: Path) -> None:
    cv_names = [f"cv{k + 1}" for k in range(outputs[0].shape[1])]
    export_cv(model, path, atom_indices=plan.atoms.tolist(), n_particles=plan.topology.n_atoms,
              topology=plan.topology, lagtime_ps=config.lagtime_ps, frame_interval_ps=data.frame_interval_ps,
              training_outputs=outputs, featurizer_checkpoint=config.featurizer.weights_file(),
              dtype=torch.float32, periodic=data.periodic,
              extra={"cv_names": cv_names, "singular_values": [float(s) for s in model.singular_values],
                     "selection": config.selection, "protocol": config.protocol, "context": config.context,
                     "mixer": config.mixer, "seed": best["seed"], "vamp2_val": best["vamp2_val"],
                     "trajectories": [str(p) for p in plan.trajectories], "stride": config.stride})
