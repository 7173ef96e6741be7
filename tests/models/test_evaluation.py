"""The chunked no-grad evaluation helper: chunking does not change the result, modes are restored."""

import pytest
import torch

from cvlearn.models.evaluation import eval_mode, evaluate_chunked


def test_chunks_give_the_same_outputs_without_grad():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2)).double()
    x = torch.randn(103, 4, dtype=torch.float64)
    whole = evaluate_chunked(net, x, chunk_size=1000, modules=(net,))
    chunked = evaluate_chunked(net, x, chunk_size=7, modules=(net,))
    torch.testing.assert_close(chunked, whole)
    net.eval()
    torch.testing.assert_close(whole, net(x).detach())  # eval mode: dropout off
    assert whole.shape == (103, 2) and not whole.requires_grad


def test_modes_are_restored():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).eval()
    with eval_mode(a, b):
        assert not a.training and not b.training
    assert a.training and not b.training
    evaluate_chunked(a, torch.zeros(3, 2), modules=(a,))
    assert a.training
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1, found 0"):
        evaluate_chunked(a, torch.zeros(3, 2), chunk_size=0)
