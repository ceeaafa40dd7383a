"""Linear probe: the solver reaches the optimum of its objective, recovers a separable problem, and the
penalty sweep picks by validation accuracy and refits on train + validation."""

import pytest
import torch
import torch.nn.functional as F

from mumo.errors import ConfigError
from mumo.eval.linear_probe import fit_logistic_regression, linear_probe


def _blobs(n: int, generator: torch.Generator, spread: float = 0.3):
    """Three well-separated Gaussian blobs in 6-D, on a large offset and scale (standardization's job)."""
    centres = torch.tensor([[4.0, 0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0, 0], [0, 0, 4.0, 0, 0, 0]])
    labels = torch.randint(3, (n,), generator=generator)
    x = centres[labels] + spread * torch.randn(n, 6, generator=generator)
    return x * 50.0 + 1000.0, labels


@pytest.mark.learned
def test_probe_recovers_a_separable_toy_problem():
    g = torch.Generator().manual_seed(0)
    result = linear_probe(_blobs(300, g), _blobs(200, g))
    assert result.accuracy == 1.0
    assert set(result.val_accuracy) == {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0}
    assert result.val_accuracy[result.l2] == max(result.val_accuracy.values())


@pytest.mark.parametrize("l2", [1e-4, 1e-3, 0.1])
def test_solver_reaches_the_optimum_of_its_objective(l2):
    g = torch.Generator().manual_seed(1)
    x, y = _blobs(120, g, spread=2.0)  # overlapping classes: a finite optimum even without a penalty
    clf = fit_logistic_regression(x, y, 3, l2=l2)
    w = clf.weight.clone().requires_grad_(True)
    b = clf.bias.clone().requires_grad_(True)
    z = (x.double() - clf.mean) / clf.std
    loss = F.cross_entropy(z @ w.T + b, y) + l2 * w.square().sum()
    gw, gb = torch.autograd.grad(loss, (w, b))
    assert gw.abs().max() < 1e-6 and gb.abs().max() < 1e-6


def test_a_stronger_penalty_shrinks_the_weights():
    g = torch.Generator().manual_seed(2)
    x, y = _blobs(100, g, spread=1.0)
    norms = [fit_logistic_regression(x, y, 3, l2).weight.norm() for l2 in (1e-4, 1e-2, 1.0)]
    assert norms[0] > norms[1] > norms[2]


def test_given_validation_split_is_swept_then_folded_into_the_final_fit():
    g = torch.Generator().manual_seed(3)
    train, val, test = _blobs(60, g, spread=1.5), _blobs(40, g, spread=1.5), _blobs(50, g, spread=1.5)
    result = linear_probe(train, test, val=val, l2_grid=(1e-4, 1.0))
    assert set(result.val_accuracy) == {1e-4, 1.0}
    both = torch.cat([train[0], val[0]]).double()
    torch.testing.assert_close(result.classifier.mean, both.mean(dim=0))  # refit on train + val
    assert result.accuracy == result.classifier.accuracy(*test)
    assert result.to_dict()["l2"] == result.l2


def test_probe_errors_say_what_is_wrong():
    x, y = torch.randn(10, 4), torch.randint(2, (10,))
    with pytest.raises(ConfigError, match="same N"):
        linear_probe((x, y[:5]), (x, y))
    with pytest.raises(ConfigError, match="l2_grid is empty"):
        linear_probe((x, y), (x, y), l2_grid=())
    with pytest.raises(ConfigError, match="labels must lie"):
        fit_logistic_regression(x, y + 5, 2, 0.1)


def test_progress_counts_each_fit_and_each_embedded_split(tiny_clip):
    from mumo.eval.linear_probe import probe_images

    g = torch.Generator().manual_seed(0)
    calls = []
    linear_probe(_blobs(60, g), _blobs(30, g), l2_grid=(1e-3, 1.0), progress=lambda *a: calls.append(a))
    assert calls == [(1, 3), (2, 3), (3, 3)]  # two penalties, then the refit on train + validation

    def split(n):
        return torch.rand(n, 3, 32, 32, generator=g), torch.arange(n) % 3

    calls.clear()
    grid, note = (1e-3, 1.0), lambda *a: calls.append(a)
    probe_images(tiny_clip, split(12), split(6), val=split(6), l2_grid=grid, progress=note)
    assert calls == [(i, 6) for i in range(1, 7)]  # three splits embedded, two fits, the refit
