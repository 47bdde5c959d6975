"""Content, style (distribution alignment), total-variation and KL losses.

A style loss sees each position of a layer's ``N x H x W`` feature map as one sample of an
``N``-dimensional distribution (Li et al. 2017) and compares the distributions of an image and a
style image layer by layer. ``set_target`` summarises the style once (Gram, mean/std, mean/Sigma^1/2,
samples); ``forward`` compares a batch against it. A target batch of 1 is broadcast; a target batch
of ``B`` is compared pairwise with an input batch of ``B`` (different styles per sample).

Every loss is computed in float32/float64 with autocast disabled: Gram matrices and eigenvalues are
not meaningful in bfloat16.

Default scales (beta' of Li et al.) make ``gamma = 1`` a balanced content/style trade-off: they are
the median ratio of the image-gradient norms of the content loss and of each raw style loss,
measured with the Caffe VGG-19 on real photo/painting pairs at 256 px by
``tests/benchmarks/calibrate_style_scales.py`` (each term measured where it is unsatisfied: the style
gradient at the photo, the content gradient at the painting), rounded to one significant digit.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .features import CONTENT_LAYER, STYLE_LAYERS


def _no_autocast(tensor: torch.Tensor):
    return torch.autocast(tensor.device.type, enabled=False) if tensor.device.type in ("cuda", "cpu") \
        else contextlib.nullcontext()


def positions(features: torch.Tensor) -> torch.Tensor:
    """``BxNxHxW`` -> ``BxMxN``: one row per spatial position (a sample of the layer's distribution)."""
    return features.float().flatten(2).transpose(1, 2)


def mean_and_gram(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean ``BxN`` and Gram ``x^T x / M`` (``BxNxN``) of ``BxMxN`` positions."""
    return x.mean(1), x.transpose(1, 2) @ x / x.shape[1]


def _sq_norm(x: torch.Tensor, dims) -> torch.Tensor:
    return x.square().sum(dims)


class StyleLoss(nn.Module):
    """Base class: ``layer_weights`` maps layer name -> weight; ``scale`` is beta' (None: the kind's default)."""

    default_scale = 1.0

    def __init__(self, layer_weights: dict[str, float] | None = None, scale: float | None = None):
        super().__init__()
        self.layer_weights = dict(layer_weights or {layer: 1.0 for layer in STYLE_LAYERS})
        self.scale = self.default_scale if scale is None else float(scale)
        self.targets: dict[str, tuple] = {}

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.layer_weights)

    def summarize(self, x: torch.Tensor) -> tuple:
        """What the method needs of the target's ``BxMxN`` positions."""
        raise NotImplementedError

    def distance(self, x: torch.Tensor, target: tuple) -> torch.Tensor:
        """Per-sample (``B``) distance of positions ``x`` (``BxMxN``) to a summarised target."""
        raise NotImplementedError

    @torch.no_grad()
    def set_target(self, style_features: dict[str, torch.Tensor]) -> "StyleLoss":
        self.targets = {}
        for layer in self.layers:
            with _no_autocast(style_features[layer]):
                self.targets[layer] = self.summarize(positions(style_features[layer].detach()))
        return self

    def forward(self, features: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
        if not self.targets:
            raise RuntimeError(f"{type(self).__name__}: call set_target(style_features) before computing the loss")
        total = 0.0
        for layer, weight in self.layer_weights.items():
            x = features[layer]
            target = self.targets[layer]
            target_batch = target[0].shape[0]
            if target_batch not in (1, x.shape[0]):
                raise ValueError(f"style target has batch {target_batch}; the input batch {x.shape[0]} must match it "
                                 f"or the target must be a single style")
            with _no_autocast(x):
                total = total + weight * self.distance(positions(x), target)
        return _reduce(self.scale * total, reduction)


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class GramLoss(StyleLoss):
    """Gatys et al.: ``1/(4 N^2 M^2) sum (G - A)^2`` = ``MMD^2[k=(x^T y)^2] / (4 N^2)`` (Li et al., eq. 9)."""

    default_scale = 1e-5

    def summarize(self, x):
        return (mean_and_gram(x)[1],)

    def distance(self, x, target):
        (gram,) = target
        n = x.shape[-1]
        return _sq_norm(mean_and_gram(x)[1] - gram, (1, 2)) / (4 * n * n)


class LinearMMDLoss(StyleLoss):
    """MMD^2 with ``k(x, y) = x^T y``: the squared difference of the means, over ``Z = N``."""

    default_scale = 2.0

    def summarize(self, x):
        return (x.mean(1),)

    def distance(self, x, target):
        (mean,) = target
        return _sq_norm(x.mean(1) - mean, 1) / x.shape[-1]


class PolyMMDLoss(StyleLoss):
    """MMD^2 with ``k(x, y) = (x^T y + c)^2``, over ``Z = N^2``.

    Expanding the kernel, the biased estimate is ``||G_x - G_y||_F^2 + 2c ||mu_x - mu_y||^2`` with
    ``G = X^T X / M``: linear in the number of positions instead of quadratic.
    """

    default_scale = 3e-6

    def __init__(self, layer_weights=None, scale=None, c: float = 1.0, d: int = 2):
        super().__init__(layer_weights, scale)
        if d != 2:
            raise ValueError("mmd_poly supports degree d=2 (the closed form through Gram matrices); got d={d}")
        self.c = float(c)

    def summarize(self, x):
        return mean_and_gram(x)

    def distance(self, x, target):
        mean, gram = target
        x_mean, x_gram = mean_and_gram(x)
        n = x.shape[-1]
        return (_sq_norm(x_gram - gram, (1, 2)) + 2 * self.c * _sq_norm(x_mean - mean, 1)) / (n * n)


class GaussianMMDLoss(StyleLoss):
    """MMD^2 with ``k(x, y) = exp(-||x - y||^2 / 2 sigma^2)``: the unbiased linear-time estimate
    (Gretton et al. 2012) over ``K`` disjoint pairs of sampled positions; sigma^2 is the mean squared
    distance of the sampled pairs (per sample, not differentiated). Stochastic: a new draw per call."""

    default_scale = 2e6

    def __init__(self, layer_weights=None, scale=None, max_pairs: int = 4096, generator: torch.Generator | None = None):
        super().__init__(layer_weights, scale)
        self.max_pairs = int(max_pairs)
        self.generator = generator

    def summarize(self, x):
        return (x,)

    def _draw(self, count: int, pairs: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        if count >= 2 * pairs:
            index = torch.randperm(count, generator=self.generator)[: 2 * pairs]
        else:  # fewer positions than samples needed (tiny maps): draw with replacement
            index = torch.randint(count, (2 * pairs,), generator=self.generator)
        index = index.to(device)
        return index[0::2], index[1::2]

    def distance(self, x, target):
        (y,) = target
        pairs = max(1, min(x.shape[1], y.shape[1], self.max_pairs) // 2)
        i1, i2 = self._draw(x.shape[1], pairs, x.device)
        j1, j2 = self._draw(y.shape[1], pairs, x.device)
        x1, x2, y1, y2 = x[:, i1], x[:, i2], y[:, j1], y[:, j2]
        sq = torch.stack([_sq_norm(x1 - x2, -1), _sq_norm(y1 - y2, -1).expand(x.shape[0], -1),
                          _sq_norm(x1 - y2, -1), _sq_norm(x2 - y1, -1)])  # 4 x B x K
        sigma2 = sq.detach().mean((0, 2), keepdim=True).clamp_min(1e-8)
        k = torch.exp(-sq / (2 * sigma2))
        return (k[0] + k[1] - k[2] - k[3]).mean(-1)


class BNStatsLoss(StyleLoss):
    """Batch-normalisation statistics (Li et al.): ``1/N sum_i (mu_x^i - mu_s^i)^2 + (sigma_x^i - sigma_s^i)^2``.

    ``relative``: divide by the target's ``||mu_s||^2 + ||sigma_s||^2`` instead of ``N``, so that every layer
    counts alike whatever its activations' scale; per layer it is then the evaluation's style distance
    (``nststyle.metrics``). Raw, relu4_1 outweighs relu1_1 by ~3400 on paintings (Caffe VGG-19)."""

    default_scale = 1.0

    def __init__(self, layer_weights=None, scale=None, eps: float = 1e-5, relative: bool = False):
        super().__init__(layer_weights, scale)
        self.eps = eps  # keeps d sigma / d x finite for constant feature maps
        self.relative = relative

    def summarize(self, x):
        return self._stats(x)

    def _stats(self, x):
        var, mean = torch.var_mean(x, dim=1, correction=0)
        return mean, (var + self.eps).sqrt()

    def distance(self, x, target):
        mean, std = target
        x_mean, x_std = self._stats(x)
        gap = _sq_norm(x_mean - mean, 1) + _sq_norm(x_std - std, 1)
        return gap / (_sq_norm(mean, 1) + _sq_norm(std, 1)).clamp_min(1e-12) if self.relative else gap / x.shape[-1]


def _covariance(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``BxN`` and unbiased covariance ``BxNxN`` of ``BxMxN`` positions."""
    mean = x.mean(1)
    centred = x - mean[:, None]
    return mean, centred.transpose(1, 2) @ centred / max(x.shape[1] - 1, 1)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag_embed(values.clamp_min(0).sqrt()) @ vectors.transpose(-1, -2)


def _psd_sqrt_newton_schulz(matrix: torch.Tensor, iterations: int, ridge: float) -> torch.Tensor:
    """``(M + ridge * ||M||_F * I)^1/2`` of symmetric PSD ``BxNxN`` matrices by coupled Newton-Schulz
    iterations (Higham 2008; Lin & Maji 2017): matrix products only, so fast on GPUs, where batched
    eigendecompositions are not. Scaling by the Frobenius norm puts the eigenvalues in [0, 1], where the
    iteration converges; the ridge lifts the rounding-negative eigenvalues of singular covariances (deep
    layers: more channels than positions), on which it would blow up. Run it in float64."""
    norm = torch.linalg.matrix_norm(matrix).clamp_min(torch.finfo(matrix.dtype).tiny)[:, None, None]
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device).expand_as(matrix)
    y, z = matrix / norm + ridge * eye, eye
    for _ in range(iterations):
        t = 1.5 * eye - 0.5 * z @ y
        y, z = y @ t, t @ z
    return y * norm.sqrt()


class W2Loss(StyleLoss):
    """Squared 2-Wasserstein distance between Gaussians fitted to the features (closed form):
    ``||mu_x - mu_s||^2 + tr S_x + tr S_s - 2 tr((S_s^1/2 S_x S_s^1/2)^1/2)``.

    ``S_s^1/2`` is a fixed target computed once without gradient; the trace term comes from the
    eigenvalues of a symmetric PSD matrix (``eigvalsh``), whose gradients are stable even for repeated
    eigenvalues (eigenvector gradients are not). Eigenvalues below ``floor * (tr S_s / N)^2`` count as
    zero (no gradient), so rank-deficient covariances (constant images,
    fewer positions than channels) keep finite gradients.

    ``solver="newton_schulz"`` takes both square roots by ``iterations`` float64 Newton-Schulz steps with a
    ridge of ``1e-6 ||S||_F`` instead (the distance a few per cent above the eigenvalues', stable however many
    steps): for GPUs, where batched ``eigh`` made a variational training step ~10x slower.
    """

    default_scale = 2e-3

    def __init__(self, layer_weights=None, scale=None, floor: float = 1e-8, solver: str = "eigh",
                 iterations: int = 30):
        super().__init__(layer_weights, scale)
        if solver not in ("eigh", "newton_schulz"):
            raise ValueError(f"unknown W2 solver {solver!r}; choose from eigh, newton_schulz")
        self.floor, self.solver, self.iterations, self.ridge = floor, solver, iterations, 1e-6

    def summarize(self, x):
        mean, cov = _covariance(x)
        cov = cov.double()
        trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
        # Eigenvalues of S_s^1/2 S_x S_s^1/2 are ~ (tr S_s / N)^2 when x matches s: floor relative to that.
        floor = (self.floor * (trace / x.shape[-1]).square()).clamp_min(1e-30)[:, None]
        if self.solver == "newton_schulz":
            return mean, _psd_sqrt_newton_schulz(cov, self.iterations, self.ridge), trace, floor
        return mean, _psd_sqrt(cov), trace, floor

    def distance(self, x, target):
        mean, cov_sqrt, trace, floor = target
        x_mean, x_cov = _covariance(x)
        product = cov_sqrt @ x_cov.double() @ cov_sqrt
        product = (product + product.transpose(-1, -2)) / 2  # exact symmetry for eigvalsh's backward
        if self.solver == "newton_schulz":
            root = _psd_sqrt_newton_schulz(product, self.iterations, self.ridge)
            # minus what the ridge alone adds on the (many) null directions
            cross = root.diagonal(dim1=-2, dim2=-1).sum(-1) \
                - product.shape[-1] * (self.ridge * torch.linalg.matrix_norm(product)).sqrt()
        else:
            eigenvalues = torch.linalg.eigvalsh(product)
            kept = eigenvalues > floor  # sqrt has an infinite slope at 0: drop the (numerically zero) rest
            cross = torch.where(kept, torch.where(kept, eigenvalues, 1.0).sqrt(), 0.0).sum(-1)
        distance = _sq_norm(x_mean - mean, 1).double() + x_cov.diagonal(dim1=-2, dim2=-1).sum(-1).double() \
            + trace - 2 * cross
        return distance.to(x.dtype)


class FusedStyleLoss(nn.Module):
    """A weighted sum of style losses (e.g. BN + polynomial MMD), itself a style loss."""

    def __init__(self, parts: dict[str, StyleLoss], weights: dict[str, float] | None = None):
        super().__init__()
        self.parts = nn.ModuleDict(parts)
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in parts}

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(layer for part in self.parts.values() for layer in part.layers))

    def set_target(self, style_features):
        for part in self.parts.values():
            part.set_target(style_features)
        return self

    def forward(self, features, reduction: str = "mean"):
        return sum(self.weights[name] * part(features, reduction) for name, part in self.parts.items())


STYLE_LOSSES: dict[str, type[StyleLoss]] = {
    "gram": GramLoss,
    "mmd_linear": LinearMMDLoss,
    "mmd_poly": PolyMMDLoss,
    "mmd_gaussian": GaussianMMDLoss,
    "bn": BNStatsLoss,
    "w2": W2Loss,
}


def style_loss(kind: str | dict[str, float] | list[str], layer_weights: dict[str, float] | None = None,
               scale: float | None = None, **options) -> StyleLoss | FusedStyleLoss:
    """Build a style loss by name.

    ``kind``: one of ``gram, mmd_linear, mmd_poly, mmd_gaussian, bn, w2``; a fusion ``"bn+mmd_poly"``
    (weight 1 each, each with its own default scale) or ``{"bn": 1.0, "mmd_poly": 0.5}``.
    ``options`` go to the kinds that accept them (e.g. ``c`` for mmd_poly, ``max_pairs`` for
    mmd_gaussian); ``scale`` overrides beta' (``1.0`` gives the raw formula).
    """
    if isinstance(kind, str) and "+" in kind:
        kind = {name.strip(): 1.0 for name in kind.split("+")}
    elif not isinstance(kind, str):
        kind = dict(kind) if isinstance(kind, dict) else {name: 1.0 for name in kind}
    if isinstance(kind, dict):
        parts = {name: style_loss(name, layer_weights, scale, **options) for name in kind}
        return FusedStyleLoss(parts, kind)
    if kind not in STYLE_LOSSES:
        raise ValueError(f"unknown style loss {kind!r}; choose from {', '.join(STYLE_LOSSES)} or a fusion like 'bn+mmd_poly'")
    cls = STYLE_LOSSES[kind]
    accepted = cls.__init__.__code__.co_varnames[: cls.__init__.__code__.co_argcount]
    return cls(layer_weights, scale, **{key: value for key, value in options.items() if key in accepted})


class ContentLoss(nn.Module):
    """Mean squared error to cached target activations of one layer (relu4_2 by default)."""

    def __init__(self, layer: str = CONTENT_LAYER):
        super().__init__()
        self.layer = layer
        self.target: torch.Tensor | None = None

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    def set_target(self, content_features: dict[str, torch.Tensor]) -> "ContentLoss":
        self.target = content_features[self.layer].detach()
        return self

    def forward(self, features: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
        if self.target is None:
            raise RuntimeError("ContentLoss: call set_target(content_features) before computing the loss")
        return _reduce(content_distance(features[self.layer], self.target), reduction)


def content_distance(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error of two activation maps (``target`` may be a batch of 1)."""
    with _no_autocast(x):
        return (x.float() - target.float()).square().flatten(1).mean(1)


def total_variation(images: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per image: the sum of squared differences of vertically and horizontally adjacent pixels."""
    dy = (images[..., 1:, :] - images[..., :-1, :]).square().flatten(1).sum(1)
    dx = (images[..., :, 1:] - images[..., :, :-1]).square().flatten(1).sum(1)
    return _reduce(dx + dy, reduction)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the code dimensions."""
    kl = 0.5 * (mu.square() + logvar.exp() - logvar - 1).flatten(1).sum(1)
    return _reduce(kl, reduction)
