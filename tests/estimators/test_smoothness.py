import numpy as np
import pytest
import torch

from cvlearn.estimators import VAMPNet
from cvlearn.estimators.smoothness import SmoothnessTerm, dirichlet_penalty, gradient_norms
from cvlearn.export import export_cv
from tests.conftest import make_tiny_cv
from tests.export.test_cv import _central_differences


def analytic(x):
    """Two correlated, non-linear outputs of positions [B, 2, 3]."""
    a = torch.sin(3.0 * x[:, 0, 0] - x[:, 1, 2])
    b = (x[:, 1] - x[:, 0]).pow(2).sum(-1) + 0.5 * a
    return torch.stack([a, b], 1)


def test_penalty_equals_finite_difference_dirichlet_form():
    pos = torch.randn(7, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    jac = torch.stack([_central_differences(lambda p: analytic(p[None])[0], p, [0, 1]) for p in pos])  # [B, k, 2, 3]
    jac = jac.reshape(7, 2, -1)
    gram = torch.einsum("bkd,bld->kl", jac, jac) / 7
    s = analytic(pos) - analytic(pos).mean(0)
    cov = s.T @ s / 7
    expected = torch.trace(torch.linalg.solve(cov, gram))
    got = dirichlet_penalty(analytic, pos, epsilon=0.0).detach()
    assert float(abs(got - expected) / expected) < 1e-8
    # one output: E|∇s|² / Var(s); any invertible affine map of the outputs leaves it unchanged (whitened)
    one = dirichlet_penalty(lambda p: analytic(p)[:, :1], pos, epsilon=0.0)
    assert float(abs(one.detach() - gram[0, 0] / cov[0, 0])) < 1e-8 * float(one.detach())
    mixed = dirichlet_penalty(lambda p: 5.0 * analytic(p) @ torch.tensor([[1.0, 2.0], [0.5, -1.0]],
                                                                           dtype=torch.float64) + 3.0, pos, epsilon=0.0)
    assert float(abs(mixed.detach() - got) / got) < 1e-8


def test_penalty_is_differentiable_in_the_parameters():
    lin = torch.nn.Linear(6, 2).double()
    pos = torch.randn(9, 2, 3, dtype=torch.float64)
    penalty = dirichlet_penalty(lambda p: torch.tanh(lin(p.reshape(len(p), -1))), pos)
    penalty.backward()
    assert lin.weight.grad is not None and float(lin.weight.grad.abs().sum()) > 0


def test_input_validation():
    with pytest.raises(ValueError, match="smoothness: expected a finite number >= 0"):
        VAMPNet(torch.nn.Linear(3, 1), lagtime=1, smoothness=-1.0)
    with pytest.raises(ValueError, match="smoothness_frames: expected an integer >= 2"):
        VAMPNet(torch.nn.Linear(3, 1), lagtime=1, smoothness=0.1, smoothness_frames=1)
    with pytest.raises(ValueError, match=r"positions_nm: expected shape \[n_frames >= 2, n_atoms, 3\]"):
        dirichlet_penalty(analytic, torch.zeros(4, 2))


def _ala2_like(ala2, heavy, n_traj=2, n_frames=64, seed=0):
    """Heavy-atom positions (nm) with a slow two-state hop of one atom plus fast noise."""
    rng = np.random.default_rng(seed)
    base = np.asarray(ala2.positions_nm)[heavy]
    out = []
    for _ in range(n_traj):
        state = np.cumsum(rng.random(n_frames) < 0.05) % 2
        x = base + 0.01 * rng.normal(size=(n_frames, len(heavy), 3))
        x[:, 4, 0] += 0.2 * state
        out.append(torch.tensor(x, dtype=torch.float32))
    return out


def _train(ala2, ala2_heavy, smoothness, data, max_epochs=12, **kwargs):
    heavy, z = ala2_heavy
    torch.manual_seed(0)
    lobe = make_tiny_cv(ala2.topology, heavy, z, n_cvs=1)
    est = VAMPNet(lobe, lagtime=1, batch_size=32, max_epochs=max_epochs, patience=max_epochs,
                  learning_rate=5e-3, progress=False,
                  smoothness=smoothness, smoothness_frames=16, **kwargs)
    return est.fit(data[:-1], data[-1:])


@pytest.fixture(scope="module")
def trained(ala2, ala2_heavy):
    data = _ala2_like(ala2, ala2_heavy[0], n_traj=3)
    return data, {lam: _train(ala2, ala2_heavy, lam, data) for lam in (0.0, 0.1)}


def test_smoothness_lowers_the_gradient_norm(trained):
    data, fitted = trained
    val = data[-1]
    median = {}
    for lam, est in fitted.items():
        model = est.fetch_model()
        assert est.best_val_vamp2 > 1.3  # it still learns the slow hop
        median[lam] = float(gradient_norms(model, val).median())  # per unit train std (whitened CV)
    assert median[0.1] < 0.8 * median[0.0], median  # measured 27 vs 45


def test_zero_smoothness_is_the_default_path(ala2, ala2_heavy):
    data = _ala2_like(ala2, ala2_heavy[0], n_traj=2, n_frames=40)
    plain = _train(ala2, ala2_heavy, 0.0, data, max_epochs=2)
    given = _train(ala2, ala2_heavy, 0.0, data, max_epochs=2, smoothness_inputs=lambda x: x)
    for a, b in zip(plain.lobe.state_dict().values(), given.lobe.state_dict().values()):
        assert torch.equal(a, b)
    assert plain.history[-1]["val_vamp2"] == given.history[-1]["val_vamp2"]
    assert "smoothness" not in plain._config(1, 1)


def test_frozen_protocol_trains_through_the_featurizer(ala2, ala2_heavy):
    from cvlearn.models.cv import TokenCV

    heavy, z = ala2_heavy
    chain = make_tiny_cv(ala2.topology, heavy, z, n_cvs=1)
    embedder = torch.nn.Sequential(chain.featurizer, chain.tokens).eval().requires_grad_(False)
    positions = _ala2_like(ala2, heavy, n_traj=2, n_frames=40)
    with torch.no_grad():
        tokens = [embedder(p) for p in positions]
    lobe = TokenCV(chain.mixer, chain.head)
    term = SmoothnessTerm(1.0, 8, torch.cat(positions[:1]), featurize=embedder)
    penalty = term(lobe, torch.arange(40))
    penalty.backward()
    assert float(penalty.detach()) > 0 and any(float(p.grad.abs().sum()) > 0 for p in lobe.head.parameters())
    est = VAMPNet(lobe, lagtime=1, batch_size=16, max_epochs=1, progress=False, smoothness=0.1,
                  smoothness_frames=8, smoothness_inputs=embedder)
    est.fit(tokens[:1], tokens[1:], train_positions=positions[:1])
    assert np.isfinite(est.history[0]["val_vamp2"])
    with pytest.raises(ValueError, match="train_positions: expected 40 frames"):
        est.fit(tokens[:1], tokens[1:], train_positions=[positions[0][:20]])


def test_smoothed_cv_exports_with_finite_difference_forces(trained, ala2, ala2_heavy, tmp_path):
    heavy, _ = ala2_heavy
    module = export_cv(trained[1][0.1].fetch_model(), tmp_path / "cv.pt", atom_indices=heavy,
                       n_particles=ala2.topology.getNumAtoms(), dtype=torch.float64, frame_interval_ps=1.0)
    pos = torch.tensor(ala2.positions_nm, dtype=torch.float64)
    pos_g = pos.clone().requires_grad_(True)
    grad = torch.autograd.grad(module(pos_g)[0], pos_g)[0]
    fd = _central_differences(module, pos, heavy)[0]
    assert float((grad - fd).norm() / fd.norm()) < 1e-3
