"""Token mixers and VAMP heads: shapes, TorchScript equality, variable token counts, CLS readout."""

import pytest
import torch

from cvlearn.nn.heads import MLPHead, SoftmaxHead, make_head
from cvlearn.nn.mixers import AttentionMixer, MLPMixer, SumPool, make_mixer

F = 8


def scripted_equal(module, x):
    module.eval()
    scripted = torch.jit.script(module)
    with torch.no_grad():
        assert torch.allclose(module(x), scripted(x), atol=1e-6, rtol=1e-6)
    return scripted


@pytest.mark.parametrize("mixer", [SumPool(), MLPMixer(5, F), MLPMixer(5, F, readout="mean", n_layers=1),
                                   AttentionMixer(F, n_heads=2), AttentionMixer(F, n_heads=2, readout="cls"),
                                   AttentionMixer(F, n_heads=4, readout="sum")])
def test_mixers_script_and_match(mixer):
    torch.manual_seed(0)
    x = torch.randn(7, 5, F)
    scripted = scripted_equal(mixer, x)
    assert scripted(x).shape == (7, F)


def test_attention_takes_any_token_count_and_is_permutation_invariant():
    torch.manual_seed(0)
    mixer = AttentionMixer(F, n_heads=2).eval()
    scripted = torch.jit.script(mixer)
    for n in (1, 3, 11):
        x = torch.randn(4, n, F)
        assert scripted(x).shape == (4, F)
        assert torch.allclose(mixer(x), mixer(x[:, torch.randperm(n)]), atol=1e-5)


def test_cls_token_is_prepended_and_read_out():
    torch.manual_seed(0)
    mixer = AttentionMixer(F, n_heads=2, readout="cls").eval()
    x = torch.randn(3, 4, F)
    before = mixer(x)
    with torch.no_grad():
        mixer.cls.add_(torch.randn_like(mixer.cls))
    assert not torch.allclose(before, mixer(x))  # the output depends on the learned CLS token
    assert mixer.cls.requires_grad and mixer.cls.shape == (1, 1, F)


def test_mlp_mixer_needs_its_token_count():
    mixer = MLPMixer(5, F)
    with pytest.raises(ValueError, match="expected tokens"):
        mixer(torch.randn(2, 4, F))
    with pytest.raises(ValueError, match="n_tokens"):
        make_mixer("mlp_mixer", F)
    with pytest.raises(ValueError, match="kind"):
        make_mixer("gru", F)


def test_mixers_are_differentiable_twice():
    """Exported CVs need forces: d output / d input must itself be differentiable (training on forces)."""
    torch.manual_seed(0)
    for mixer in (MLPMixer(3, F), AttentionMixer(F, n_heads=2, readout="cls")):
        x = torch.randn(2, 3, F, dtype=torch.float64, requires_grad=True)
        mixer = mixer.double()
        (g,) = torch.autograd.grad(mixer(x).sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad(g.square().sum(), x)
        assert torch.isfinite(g2).all()


@pytest.mark.parametrize("kind", ["mlp", "softmax"])
def test_heads_script_and_match(kind):
    torch.manual_seed(0)
    head = make_head(kind, F, 3, hidden=16)
    head.scaler.fit_(torch.randn(50, F))
    x = torch.randn(6, F)
    scripted_equal(head, x)
    if kind == "softmax":
        assert isinstance(head, SoftmaxHead) and isinstance(head, MLPHead)
        assert torch.allclose(head.eval()(x).sum(dim=1), torch.ones(6, dtype=x.dtype))
