"""Compiled calls (``cvlearn.compiling``): ahead of time from C++, and checked against the eager call."""

import logging

import torch

from cvlearn.compiling import AheadOfTime, CompiledOrEager, disagreement


def _mlp_jacobian():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2)).requires_grad_(False)

    def rows_and_values(x):
        s = net(x.reshape(1, 6))[0]
        return s[[1]], s.detach()

    return torch.func.jacrev(rows_and_values, argnums=0, has_aux=True)


def test_ahead_of_time_call_equals_the_eager_call():
    jacobian = _mlp_jacobian()
    x = torch.randn(2, 3)
    compiled = AheadOfTime(jacobian, "an MLP's Jacobian")
    (j, s), (j_eager, s_eager) = compiled(x), jacobian(x)
    assert compiled.ahead_of_time and j.shape == (1, 2, 3) and s.shape == (2,)
    torch.testing.assert_close(j, j_eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s, s_eager, rtol=1e-5, atol=1e-6)
    y = torch.randn(2, 3)  # later calls run the compiled code on new inputs
    torch.testing.assert_close(compiled(y)[0], jacobian(y)[0], rtol=1e-5, atol=1e-6)


def test_a_compiled_call_that_disagrees_with_the_eager_one_is_dropped_with_a_warning(caplog):
    """A compiled graph that returns other numbers than its eager function (here: its own random stream; in
    practice a miscompile) is refused at the first call, and the eager function runs from then on."""
    def noisy(x):
        return x + torch.rand_like(x)

    x = torch.zeros(4, 3)
    with caplog.at_level(logging.WARNING, logger="cvlearn.compiling"):
        compiled = AheadOfTime(noisy, "a noisy function")
        compiled(x)
    assert not compiled.ahead_of_time
    assert isinstance(compiled.fn, CompiledOrEager) and compiled.fn.fn is noisy  # torch.compile refused too
    messages = [r.getMessage() for r in caplog.records]
    assert any("ahead-of-time compile of a noisy function failed" in m and "disagrees" in m for m in messages)
    assert any("torch.compile of a noisy function disagrees" in m for m in messages)


def test_disagreement_is_relative_to_each_output_scale():
    want = (torch.tensor([1000.0, 2.0]), torch.tensor([1e-3]))
    assert disagreement((want[0] + 0.01, want[1]), want) is None  # 1e-5 of the first output's scale
    assert disagreement((want[0], want[1] * 2), want) == 1.0
    assert disagreement((want[0], torch.tensor([float("nan")])), want) is not None
    assert disagreement((want[0], torch.zeros(2)), want) == float("inf")  # another shape
    assert disagreement(want[0], want) == float("inf")  # another number of outputs
