"""Denoising pre-training of a small ET on the project's own MD corpus, then the backbone in a CV featurizer.

    python examples/05_pretrain_small.py [--quick] [--out runs/pretrain_small]

Builds the corpus (capped amino acids in implicit solvent at several temperatures; --quick: 2 molecules, 5 ps),
pre-trains an Equivariant Transformer to predict the noise added to the heavy-atom positions, writes the
backbone checkpoint, history and loss curve, and loads the checkpoint strictly into the alanine-dipeptide
featurizer. The full run is the shipped checkpoint's recipe (cvlearn/checkpoints/et_denoise_small.yaml).
"""

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cvlearn.checkpoints import default_recipe  # noqa: E402
from cvlearn.config import load_config  # noqa: E402
from cvlearn.data.selection import atomic_numbers  # noqa: E402
from cvlearn.nn.featurizers import featurizer_from_checkpoint  # noqa: E402
from openmm_plugin.stages.pretrain import PretrainConfig, run_pretrain  # noqa: E402
from systems import alanine_dipeptide  # noqa: E402
from openmm_plugin.stages.corpus import tiny_spec  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny corpus and model (< 1 minute)")
    parser.add_argument("--out", default="runs/pretrain_small")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    if args.quick:
        config = PretrainConfig(out=str(out / "pretrain"), corpus=str(out / "corpus"), corpus_spec=tiny_spec(),
                                validation_every=2, max_epochs=12, learning_rate=3e-3, max_atoms=100,
                                architecture={"hidden_channels": 32, "num_layers": 1, "num_rbf": 16, "num_heads": 4})
    else:
        config = replace(load_config(PretrainConfig, default_recipe()), out=str(out / "pretrain"),
                         corpus=str(out / "corpus"), install_to=None)
    summary = run_pretrain(config, make_corpus=True, progress=not args.quick)

    molecule = alanine_dipeptide.build()
    heavy = alanine_dipeptide.heavy_atom_indices(molecule.topology)
    featurizer = featurizer_from_checkpoint(out / "pretrain" / "backbone.pt",
                                            atomic_numbers(molecule.topology, heavy)).eval()
    x = featurizer(torch.as_tensor(molecule.positions_nm[heavy], dtype=torch.float32).unsqueeze(0))
    print({"final_train_loss": round(summary["final_train_loss"], 4),
           "final_val_loss": round(summary["final_val_loss"], 4),
           "n_train": summary["n_train"], "n_val": summary["n_val"],
           "ala2_embedding_shape": list(x.shape), "out": str(out)})
