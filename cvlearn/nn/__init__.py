"""Networks from positions to CVs: featurizers (nm in, Å inside), residue tokens and windows, mixers, heads."""

from cvlearn.nn.heads import MLPHead, SoftmaxHead, make_head
from cvlearn.nn.mixers import AttentionMixer, MLPMixer, SumPool, make_mixer
from cvlearn.nn.tokens import MoleculeTokens, ResidueTokens
from cvlearn.nn.windows import WindowTokens, make_token_embedder

__all__ = ["AttentionMixer", "MLPHead", "MLPMixer", "MoleculeTokens", "ResidueTokens", "SoftmaxHead", "SumPool",
           "WindowTokens", "make_head", "make_mixer", "make_token_embedder"]
