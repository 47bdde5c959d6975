import numpy as np
import pytest
import scipy.linalg
import torch

from nststyle.features import STYLE_LAYERS
from nststyle.losses import (ContentLoss, STYLE_LOSSES, kl_divergence, style_loss, total_variation)
from nststyle.metrics import StyleMetrics

torch.manual_seed(0)
KINDS = list(STYLE_LOSSES) + ["bn+mmd_poly"]


def relu_features(batch=1, channels=8, h=6, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, h, w, generator=g).relu()


def raw(kind, **options):
    return style_loss(kind, {"f": 1.0}, scale=1.0, **options)


def loss_value(kind, x, s, **options):
    return raw(kind, **options).set_target({"f": s})({"f": x})


def mmd2_biased(x, y, kernel):
    """Plain reference: x, y are MxN sample matrices."""
    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def test_gram_loss_equals_mmd_with_squared_dot_kernel_over_4n2():
    x, s = relu_features(seed=1).double(), relu_features(seed=2).double()
    n, m = x.shape[1], x.shape[2] * x.shape[3]
    fx, fs = x[0].flatten(1), s[0].flatten(1)  # N x M
    gatys = ((fx @ fx.T - fs @ fs.T) ** 2).sum() / (4 * n**2 * m**2)
    mmd2 = mmd2_biased(fx.T, fs.T, lambda a, b: (a @ b.T) ** 2)
    assert torch.allclose(gatys, mmd2 / (4 * n**2), rtol=1e-10)
    assert torch.allclose(loss_value("gram", x.float(), s.float()).double(), gatys, rtol=1e-5)


def test_linear_mmd_is_squared_mean_difference_over_n():
    x, s = relu_features(seed=3), relu_features(h=9, w=4, seed=4)  # different numbers of positions
    fx, fs = x[0].flatten(1).T.double(), s[0].flatten(1).T.double()
    mmd2 = mmd2_biased(fx, fs, lambda a, b: a @ b.T)
    assert torch.allclose(mmd2, ((fx.mean(0) - fs.mean(0)) ** 2).sum(), rtol=1e-9)
    assert torch.allclose(loss_value("mmd_linear", x, s).double(), mmd2 / x.shape[1], rtol=1e-5)


@pytest.mark.parametrize("c", [0.0, 1.0, 3.0])
def test_poly_mmd_closed_form_matches_kernel_sums(c):
    x, s = relu_features(seed=5), relu_features(h=4, w=7, seed=6)
    fx, fs = x[0].flatten(1).T.double(), s[0].flatten(1).T.double()
    mmd2 = mmd2_biased(fx, fs, lambda a, b: (a @ b.T + c) ** 2)
    assert torch.allclose(loss_value("mmd_poly", x, s, c=c).double(), mmd2 / x.shape[1] ** 2, rtol=1e-5)


def test_gaussian_mmd_is_unbiased_estimate_of_the_full_mmd():
    # The linear-time estimate averaged over many draws approaches the (unbiased) quadratic-time MMD.
    x, s = relu_features(h=20, w=20, seed=7), relu_features(h=20, w=20, seed=8) * 1.5
    loss = raw("mmd_gaussian").set_target({"f": s})
    estimates = torch.stack([loss({"f": x}) for _ in range(400)])
    fx, fs = x[0].flatten(1).T.double(), s[0].flatten(1).T.double()
    sigma2 = torch.cdist(torch.cat([fx, fs]), torch.cat([fx, fs])).square().mean()
    k = lambda a, b: torch.exp(-torch.cdist(a, b).square() / (2 * sigma2))  # noqa: E731
    m = fx.shape[0]
    off = lambda kk: (kk.sum() - kk.diagonal().sum()) / (m * (m - 1))  # noqa: E731
    unbiased = off(k(fx, fx)) + off(k(fs, fs)) - 2 * k(fx, fs).mean()
    assert unbiased > 0
    assert abs(estimates.mean().item() - unbiased.item()) < 0.25 * unbiased.item()
    same = raw("mmd_gaussian").set_target({"f": x})
    assert abs(torch.stack([same({"f": x}) for _ in range(200)]).mean()) < 0.1 * unbiased


def test_bn_loss_matches_mean_std_formula():
    x, s = relu_features(seed=9), relu_features(seed=10)
    fx, fs = x[0].flatten(1), s[0].flatten(1)
    expected = ((fx.mean(1) - fs.mean(1)) ** 2 + (fx.std(1, correction=0) - fs.std(1, correction=0)) ** 2).mean()
    assert torch.allclose(loss_value("bn", x, s, eps=0.0), expected, rtol=1e-5)


def test_relative_bn_loss_is_the_evaluations_style_distance_per_layer():
    metrics = StyleMetrics(vgg_weights="random")
    output, painting = torch.rand(1, 3, 48, 40), torch.rand(1, 3, 56, 64)
    out_features, painting_features = metrics.encode(output), metrics.encode(painting)
    loss = style_loss("bn", {name: 1.0 for name in STYLE_LAYERS}, scale=1.0, eps=0.0, relative=True)
    total = loss.set_target(painting_features)(out_features)
    expected = metrics(output, torch.rand(1, 3, 48, 40), painting)["style"] * len(STYLE_LAYERS)
    assert total.item() == pytest.approx(expected, rel=1e-4)
    # the relative form does not change with the features' scale; the raw one goes with its square
    x, s = relu_features(seed=3), relu_features(seed=4)
    assert loss_value("bn", 7 * x, 7 * s, eps=0.0, relative=True) == pytest.approx(
        loss_value("bn", x, s, eps=0.0, relative=True).item())
    assert loss_value("bn", 7 * x, 7 * s, eps=0.0) == pytest.approx(49 * loss_value("bn", x, s, eps=0.0).item())


def w2_reference(x, s):
    """NumPy/SciPy: closed-form W2^2 between Gaussians with sqrtm."""
    fx, fs = x[0].flatten(1).T.double().numpy(), s[0].flatten(1).T.double().numpy()
    cx, cs = np.cov(fx, rowvar=False), np.cov(fs, rowvar=False)
    root = scipy.linalg.sqrtm(cs)
    cross = scipy.linalg.sqrtm(root @ cx @ root)
    return ((fx.mean(0) - fs.mean(0)) ** 2).sum() + np.trace(cx) + np.trace(cs) - 2 * np.trace(cross).real


def test_w2_matches_scipy_sqrtm_reference():
    for seed in range(3):
        x, s = relu_features(channels=16, h=10, w=10, seed=seed), relu_features(channels=16, h=8, w=12, seed=seed + 10)
        ours = loss_value("w2", x, s).item()
        assert ours == pytest.approx(w2_reference(x, s), rel=1e-4)


@pytest.mark.parametrize("shape", [(16, 10, 10), (64, 6, 6)], ids=["full_rank", "more_channels_than_positions"])
def test_w2_newton_schulz_solver_agrees_with_eigh_in_value_and_gradient(shape):
    channels, h, w = shape
    x = relu_features(batch=2, channels=channels, h=h, w=w, seed=40)
    s = relu_features(batch=2, channels=channels, h=h, w=w, seed=41)
    results = {}
    for solver in ("eigh", "newton_schulz"):
        leaf = x.clone().requires_grad_()
        value = loss_value("w2", leaf, s, solver=solver)
        value.backward()
        results[solver] = value.item(), leaf.grad.flatten()
    (exact, exact_grad), (approx, approx_grad) = results["eigh"], results["newton_schulz"]
    assert approx == pytest.approx(exact, rel=0.05)  # the ridge biases it a few per cent up
    assert torch.nn.functional.cosine_similarity(exact_grad, approx_grad, dim=0) > 0.99
    # stable once converged (a plain coupled iteration blows up on singular covariances)
    assert torch.isfinite(loss_value("w2", x, s, solver="newton_schulz", iterations=200))


def test_w2_is_zero_on_itself_and_symmetric():
    x, s = relu_features(channels=16, h=10, w=10, seed=20), relu_features(channels=16, h=10, w=10, seed=21)
    scale = loss_value("w2", x, torch.zeros_like(x)).item()  # = tr S_x + |mu_x|^2
    assert abs(loss_value("w2", x, x).item()) < 1e-5 * scale
    assert loss_value("w2", x, s).item() == pytest.approx(loss_value("w2", s, x).item(), rel=1e-4)


def test_w2_tells_apart_distributions_that_gram_confuses():
    # N(0, 1) and N(1, 0) have the same second moment E[x^2] = 1: the same Gram matrix.
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(1, 1, 100, 100, generator=g)
    normal = (normal - normal.mean()) / normal.std(correction=0)
    ones = torch.ones(1, 1, 100, 100)
    assert loss_value("gram", normal, ones).item() < 1e-8
    assert loss_value("w2", normal, ones).item() > 1.0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ["constant", "rank_deficient"])
def test_gradients_are_finite(kind, case):
    if case == "constant":  # a constant image: zero covariance of the input's features
        x = torch.full((1, 8, 6, 6), 0.7, requires_grad=True)
        s = relu_features(channels=8, h=6, w=6, seed=30)
    else:  # fewer positions than channels on both sides
        x = relu_features(channels=32, h=2, w=3, seed=31).requires_grad_()
        s = relu_features(channels=32, h=3, w=2, seed=32)
    value = style_loss(kind, {"f": 1.0}).set_target({"f": s})({"f": x})
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    if case == "rank_deficient" and kind != "mmd_gaussian":
        assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_batch_of_styles_is_compared_pairwise(kind):
    x = relu_features(batch=3, seed=40)
    styles = relu_features(batch=3, seed=41)
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    options = {"generator": generator()} if kind == "mmd_gaussian" else {}
    batched = style_loss(kind, {"f": 1.0}, **options).set_target({"f": styles})({"f": x}, reduction="none")
    assert batched.shape == (3,)
    for i in range(3):
        options = {"generator": generator()} if kind == "mmd_gaussian" else {}
        single = style_loss(kind, {"f": 1.0}, **options).set_target({"f": styles[i:i + 1]})({"f": x[i:i + 1]})
        if kind != "mmd_gaussian":  # same draw only for the first sample
            assert batched[i].item() == pytest.approx(single.item(), rel=1e-4)


def test_fusion_is_weighted_sum_of_parts():
    x, s = relu_features(seed=50), relu_features(seed=51)
    fused = style_loss({"bn": 2.0, "mmd_poly": 0.5}, {"f": 1.0}).set_target({"f": s})({"f": x})
    bn = style_loss("bn", {"f": 1.0}).set_target({"f": s})({"f": x})
    poly = style_loss("mmd_poly", {"f": 1.0}).set_target({"f": s})({"f": x})
    assert fused.item() == pytest.approx(2 * bn.item() + 0.5 * poly.item(), rel=1e-5)
    assert style_loss("bn+mmd_poly").layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def test_layer_weights_weight_the_layers():
    feats = {"a": relu_features(seed=60), "b": relu_features(seed=61)}
    target = {"a": relu_features(seed=62), "b": relu_features(seed=63)}
    a = style_loss("gram", {"a": 1.0}).set_target(target)(feats)
    b = style_loss("gram", {"b": 1.0}).set_target(target)(feats)
    both = style_loss("gram", {"a": 2.0, "b": 3.0}).set_target(target)(feats)
    assert both.item() == pytest.approx(2 * a.item() + 3 * b.item(), rel=1e-5)


def test_loss_under_bf16_autocast_is_computed_in_float32():
    x, s = relu_features(seed=70), relu_features(seed=71)
    exact = loss_value("w2", x, s)
    loss = raw("w2").set_target({"f": s.bfloat16()})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss({"f": x})
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(exact.item(), rel=2e-2)  # only the bf16 rounding of the target


def test_errors_are_clear():
    with pytest.raises(ValueError, match="unknown style loss"):
        style_loss("gramm")
    with pytest.raises(RuntimeError, match="set_target"):
        style_loss("gram", {"f": 1.0})({"f": relu_features()})
    loss = style_loss("gram", {"f": 1.0}).set_target({"f": relu_features(batch=2)})
    with pytest.raises(ValueError, match="batch"):
        loss({"f": relu_features(batch=3)})


def test_content_tv_and_kl():
    x, c = relu_features(batch=2, seed=80), relu_features(batch=1, seed=81)
    content = ContentLoss("f").set_target({"f": c})
    assert content({"f": x}).item() == pytest.approx(((x - c) ** 2).mean().item(), rel=1e-6)
    image = torch.rand(2, 3, 5, 4)
    tv = sum(((image[i, :, 1:] - image[i, :, :-1]) ** 2).sum() + ((image[i, :, :, 1:] - image[i, :, :, :-1]) ** 2).sum()
             for i in range(2)) / 2
    assert total_variation(image).item() == pytest.approx(tv.item(), rel=1e-6)
    assert total_variation(torch.ones(1, 3, 4, 4)).item() == 0
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, (0.5 * logvar).exp()), torch.distributions.Normal(0, 1)).sum(1).mean()
    assert kl_divergence(mu, logvar).item() == pytest.approx(reference.item(), rel=1e-5)
    assert kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0
