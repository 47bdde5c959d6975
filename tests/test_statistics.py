"""Channel statistics: the fast CPU path agrees with the differentiable one and with torch."""
import pytest
import torch

from nststyle.statistics import mean_std, mean_std_vector


def relu_features(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).relu()


def test_mean_std_matches_torch():
    features = relu_features(2, 3, 4, 5, seed=14)
    mean, std = mean_std(features, eps=0.0)
    assert mean.shape == std.shape == (2, 3, 1, 1)
    torch.testing.assert_close(mean.flatten(), features.mean((2, 3)).flatten())
    torch.testing.assert_close(std.flatten(), features.flatten(2).std(-1).flatten())


@pytest.mark.parametrize("unbiased", [True, False])
def test_mean_std_without_autograd_matches_the_autograd_path(unbiased):
    # without autograd mean_std takes batch norm's statistics kernel; with it, mean and var of the flat maps
    features = relu_features(3, 7, 9, 11, seed=12) * 5
    fast = mean_std(features, unbiased=unbiased)
    differentiable = mean_std(features.clone().requires_grad_(), unbiased=unbiased)
    for a, b in zip(fast, differentiable):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-12)
    flat = features.flatten(2)
    torch.testing.assert_close(fast[1].flatten(2).squeeze(-1), (flat.var(-1, unbiased=unbiased) + 1e-5).sqrt())


def test_mean_std_vector_matches_torch():
    x = torch.rand(2, 3, 5, 7) * 4
    stats = mean_std_vector(x)
    torch.testing.assert_close(stats, torch.cat([x.mean((2, 3)), x.std((2, 3), unbiased=False)], 1))
