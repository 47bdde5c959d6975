"""Variational style transfer network (Schopohl & Fuchsgruber; DESIGN.md §4).

    content --Ec--> spatial code + skips ----------------------------.
    style   --Es--> (mu, logvar) --z--> mapping --> AdaIN (mean, std) of every decoder conv
                                                   decoder: bottleneck res blocks -> upsampling convs -> RGB

Plain ``nn.Module``s without data-dependent Python control flow (``self.training`` is the only branch,
constant once the model is in eval mode), so TorchScript tracing and ONNX export see one graph.
All sizes are constructor arguments; ``VariationalStyleNet(**config)`` rebuilds a model from the dict
stored in a checkpoint.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..features import VGGEncoder
from ..statistics import mean_std_vector
from ..tracing import capturing_graph
from .layers import ReflectConv2d


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)  # up to 8 groups that divide the channels
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation {kind!r} (instance, batch, group, none)")


PADDINGS = ("reflect", "zeros")


def padded_conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                padding: str = "reflect") -> nn.Conv2d:
    """A conv that keeps the map's size (``stride`` 1). ``reflect``: the paper's reflection padding (untrained, zero
    padding leaves dark frames around stylised images); ``zeros``: the padding inside the convolution, which an
    exported graph runs without a Pad node per convolution (trained for it: docs/models/variational.md).
    Both have the same parameters, so a checkpoint of one loads into the other."""
    if padding == "reflect":
        return ReflectConv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)
    if padding == "zeros":
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)
    raise ValueError(f"unknown padding {padding!r} ({', '.join(PADDINGS)})")


class ResBlock(nn.Module):
    """Pre-activation-free residual block (conv-norm-relu-conv-norm + shortcut); ``stride=2`` halves the map."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "instance",
                 padding: str = "reflect"):
        super().__init__()
        self.body = nn.Sequential(
            padded_conv(in_channels, out_channels, 3, stride, padding), norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            padded_conv(out_channels, out_channels, 3, 1, padding), norm_layer(norm, out_channels))
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def stage_widths(width: int, downsamplings: int, max_width: int) -> list[int]:
    """Channel count at each resolution level: full size, 1/2, 1/4, ... (doubling, capped)."""
    return [min(width * 2 ** level, max_width) for level in range(downsamplings + 1)]


class Encoder(nn.Module):
    """Stem conv, then per level one strided residual block and ``blocks_per_level - 1`` plain ones.

    Returns the feature map of every level, finest first; the last one (1/2^downsamplings size) is the
    code, the others are the U-Net skips."""

    def __init__(self, width: int = 32, downsamplings: int = 3, blocks_per_level: int = 1, max_width: int = 256,
                 norm: str = "instance", in_channels: int = 3, padding: str = "reflect", stem_kernel: int = 7):
        super().__init__()
        self.widths = stage_widths(width, downsamplings, max_width)
        self.stem = nn.Sequential(padded_conv(in_channels, width, stem_kernel, 1, padding),
                                  norm_layer(norm, width), nn.ReLU(inplace=True))
        self.levels = nn.ModuleList(
            nn.Sequential(ResBlock(c_in, c_out, stride=2, norm=norm, padding=padding),
                          *[ResBlock(c_out, c_out, norm=norm, padding=padding) for _ in range(blocks_per_level - 1)])
            for c_in, c_out in zip(self.widths[:-1], self.widths[1:]))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(images)]
        for level in self.levels:
            features.append(level(features[-1]))
        return features


class StyleEncoder(nn.Module):
    """Es: an ``Encoder`` (no normalisation by default: instance norm would erase the very statistics
    that make the style) ending in adaptive pooling -> linear -> (mu, logvar) of the style code.

    ``pooling="mean_std"`` pools channel means and standard deviations (AdaIN's style statistics);
    ``"mean"`` is plain global average pooling.

    ``logvar_init`` starts the posterior narrow (sigma = exp(logvar_init / 2)): with sigma = 1 from the
    start the sampled codes are mostly noise, the decoder learns to ignore them and the posterior
    collapses onto the prior (every style looks the same); the KL term widens it as it warms up."""

    def __init__(self, style_dim: int = 64, width: int = 32, downsamplings: int = 3, blocks_per_level: int = 1,
                 max_width: int = 256, norm: str = "none", pooling: str = "mean_std", logvar_init: float = -4.0):
        super().__init__()
        if pooling not in ("mean", "mean_std"):
            raise ValueError(f"unknown style pooling {pooling!r} (mean, mean_std)")
        self.encoder = Encoder(width, downsamplings, blocks_per_level, max_width, norm)
        self.pooling = pooling
        channels = self.encoder.widths[-1] * (2 if pooling == "mean_std" else 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.to_gaussian = nn.Linear(channels, 2 * style_dim)
        with torch.no_grad():
            self.to_gaussian.bias[style_dim:].fill_(logvar_init)

    def forward(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encoder(style)[-1]
        mean = self.pool(x).flatten(1)
        if self.pooling == "mean_std":
            std = (self.pool(x * x).flatten(1) - mean * mean).clamp_min(1e-6).sqrt()
            mean = torch.cat([mean, std], dim=1)
        mu, logvar = self.to_gaussian(mean).chunk(2, dim=1)
        return mu, logvar


class VGGStyleEncoder(nn.Module):
    """Es on a frozen VGG-19: channel means and stds of ``layers`` -> MLP -> (mu, logvar).

    The paper's Es learns its features from scratch; this one starts from VGG statistics (what AdaIN
    transfers; the Magenta model's style-prediction network is pretrained too), so codes describe the
    style from the first step (docs/models/variational.md: the code matters from step 100 on, where the learned
    Es started near indifference). Training passes the style's VGG features, which the style loss computes anyway, to
    ``from_features``: no second VGG pass. The VGG weights are part of the state dict (frozen)."""

    def __init__(self, style_dim: int = 64, layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1"),
                 hidden: int = 256, vgg_weights: str = "caffe", logvar_init: float = -4.0):
        super().__init__()
        self.layers = tuple(layers)
        self.vgg = VGGEncoder(self.layers, weights=vgg_weights)
        channels = sum(2 * self.vgg(torch.zeros(1, 3, 16, 16))[name].shape[1] for name in self.layers)
        # Log-statistics, then LayerNorm: VGG activations span orders of magnitude across layers and
        # weight sources (caffe's are ~100x torchvision's); unnormalised, the first codes have norms ~80.
        self.head = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, hidden), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Linear(hidden, 2 * style_dim))
        with torch.no_grad():
            self.head[-1].bias[style_dim:].fill_(logvar_init)

    def from_features(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        statistics = torch.cat([mean_std_vector(features[name], eps=1e-6) for name in self.layers], dim=1)
        return self.head(torch.log1p(statistics)).chunk(2, dim=1)

    def forward(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            features = self.vgg(style)
        return self.from_features(features)


class _ContiguousGradient(torch.autograd.Function):
    """The identity, whose backward hands on its gradient in the standard layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def contiguous_gradient(x: torch.Tensor) -> torch.Tensor:
    """``x``; its gradient reaches what made it contiguous. ``F.instance_norm``'s CPU backward (torch 2.14) is wrong
    for a batch of one whose incoming gradient is channels-last (as after a zero-padded convolution with channels-last
    weights, ``precision=bf16``): AdaIN's one-batch normalisation gave the refinement gradients that pointed anywhere
    (``tests/test_variational.py`` checks both against a plain contiguous pass)."""
    if not torch.is_grad_enabled() or capturing_graph():
        return x
    return _ContiguousGradient.apply(x)


class AdaIN(nn.Module):
    """Normalise ``x`` (instance norm) and give it per-channel mean/std from a learned linear map of ``w``.

    The std is parameterised as 1 + a, around plain normalisation. The map keeps PyTorch's random init (only the
    bias starts at zero): with a zero map the code has no effect at first, the style encoder gets no
    gradient through it, and training sits at that saddle learning one average style."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.to_stats = nn.Linear(w_dim, 2 * channels)
        nn.init.zeros_(self.to_stats.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_stats(w).chunk(2, dim=1)
        # the affine of every (sample, channel) inside instance norm: one pass over x, one op in an ONNX graph
        batch, channels = x.shape[:2]
        normalised = F.instance_norm(x.reshape(1, batch * channels, *x.shape[2:]), weight=(1 + scale).reshape(-1),
                                     bias=shift.reshape(-1), eps=1e-5)
        return contiguous_gradient(normalised).view_as(x)


class AdaINResBlock(nn.Module):
    """Bottleneck block of the decoder: (AdaIN -> ReLU -> conv) twice, plus the identity."""

    def __init__(self, channels: int, w_dim: int, padding: str = "reflect"):
        super().__init__()
        self.norm1, self.conv1 = AdaIN(channels, w_dim), padded_conv(channels, channels, padding=padding)
        self.norm2, self.conv2 = AdaIN(channels, w_dim), padded_conv(channels, channels, padding=padding)

    def start_as_identity(self) -> None:
        """Zero the last conv: the block passes ``x`` through (how a trained decoder grows deeper unchanged)."""
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x, w)))
        return x + self.conv2(F.relu(self.norm2(h, w)))


class UpBlock(nn.Module):
    """AdaIN -> nearest x2 -> conv (the upsampling convolution); then, with a skip, concatenate the content
    encoder's map of that size and fuse with AdaIN -> a ``fuse_kernel`` conv. Every conv sees styled input."""

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int, w_dim: int, padding: str = "reflect",
                 fuse_kernel: int = 3):
        super().__init__()
        self.norm_up = AdaIN(in_channels, w_dim)
        self.conv_up = padded_conv(in_channels, out_channels, padding=padding)
        self.fuse = skip_channels > 0
        if self.fuse:
            self.norm_fuse = AdaIN(out_channels + skip_channels, w_dim)
            self.conv_fuse = padded_conv(out_channels + skip_channels, out_channels, fuse_kernel, padding=padding)

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(self.norm_up(x, w), scale_factor=2.0, mode="nearest")
        x = F.relu(self.conv_up(x))
        if self.fuse:
            x = F.relu(self.conv_fuse(self.norm_fuse(torch.cat([x, skip], dim=1), w)))
        return x


class MappingNetwork(nn.Module):
    """z -> w shared by all AdaIN layers. ``layers=0`` is the identity (AdaIN stats linear in z, as in
    the paper); a small MLP lets the low-dimensional code reach a richer set of AdaIN statistics."""

    def __init__(self, style_dim: int, hidden: int = 128, layers: int = 2):
        super().__init__()
        blocks: list[nn.Module] = []
        dim = style_dim
        for _ in range(layers):
            blocks += [nn.Linear(dim, hidden), nn.LeakyReLU(0.2, inplace=True)]
            dim = hidden
        self.net = nn.Sequential(*blocks)
        self.out_dim = dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Decoder(nn.Module):
    """Bottleneck AdaIN residual blocks at the code's resolution, then one ``UpBlock`` per level (with
    the matching content skip when ``skips``), then a ``rgb_kernel`` conv to RGB and a sigmoid (output in [0, 1]).
    ``full_res_fuse_kernel``: the kernel of the last, full-resolution fuse conv (1: a tenth of its multiply-adds, where
    the decoder spends most of its time; the conv before it keeps a 3x3 view)."""

    def __init__(self, widths: list[int], style_dim: int, bottleneck_blocks: int = 2, skips: bool = True,
                 mapping_layers: int = 2, mapping_hidden: int = 128, padding: str = "reflect", rgb_kernel: int = 7,
                 full_res_fuse_kernel: int = 3):
        super().__init__()
        self.mapping = MappingNetwork(style_dim, mapping_hidden, mapping_layers)
        w_dim = self.mapping.out_dim
        self.bottleneck = nn.ModuleList(AdaINResBlock(widths[-1], w_dim, padding)
                                        for _ in range(bottleneck_blocks))
        # Up blocks go coarse -> fine: from level l+1 to level l, taking skip l.
        self.ups = nn.ModuleList(
            UpBlock(widths[level + 1], widths[level], widths[level] if skips else 0, w_dim, padding,
                    full_res_fuse_kernel if level == 0 else 3)
            for level in reversed(range(len(widths) - 1)))
        self.to_rgb = padded_conv(widths[0], 3, rgb_kernel, 1, padding)

    def forward(self, content_features: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        return self.synthesize(content_features, self.mapping(z))

    def synthesize(self, content_features: list[torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        """The image from the mapped code ``w`` (what every AdaIN layer reads), past the mapping network."""
        x = content_features[-1]
        for block in self.bottleneck:
            x = block(x, w)
        for up, skip in zip(self.ups, reversed(content_features[:-1])):
            x = up(x, w, skip)
        return torch.sigmoid(self.to_rgb(x))


class VariationalStyleNet(nn.Module):
    """Ec + Es + decoder. Images are ``Bx3xHxW`` in [0, 1] with H, W multiples of ``self.multiple``.

    - ``encode_style(style) -> (mu, logvar)`` (``style_encoder``: ``"learned"``, the paper's Es, or ``"vgg"``,
      ``VGGStyleEncoder``); ``sample_code(mu, logvar)`` reparameterises in training
      and returns ``mu`` in eval mode.
    - ``decode(content, z)``: stylise ``content`` with codes ``z`` (``Bxstyle_dim``, or ``1xstyle_dim``
      broadcast to the batch).
    - ``forward(content, style) -> (output, mu, logvar)``.
    """

    def __init__(self, style_dim: int = 64, width: int = 32, downsamplings: int = 3, blocks_per_level: int = 1,
                 max_width: int = 256, bottleneck_blocks: int = 2, skips: bool = True,
                 content_norm: str = "instance", style_norm: str = "none", style_pooling: str = "mean_std",
                 style_width: int | None = None, mapping_layers: int = 2, mapping_hidden: int = 128,
                 logvar_init: float = -4.0, style_encoder: str = "learned", style_vgg_weights: str = "caffe",
                 padding: str = "reflect", rgb_kernel: int = 7, stem_kernel: int = 7, full_res_fuse_kernel: int = 3):
        super().__init__()
        self.style_dim = style_dim
        self.multiple = 2 ** downsamplings
        self.content_encoder = Encoder(width, downsamplings, blocks_per_level, max_width, content_norm,
                                       padding=padding, stem_kernel=stem_kernel)
        if style_encoder == "learned":
            self.style_encoder = StyleEncoder(style_dim, style_width or width, downsamplings, blocks_per_level,
                                              max_width, style_norm, style_pooling, logvar_init)
        elif style_encoder == "vgg":
            self.style_encoder = VGGStyleEncoder(style_dim, vgg_weights=style_vgg_weights, logvar_init=logvar_init)
        else:
            raise ValueError(f"unknown style_encoder {style_encoder!r} (learned, vgg)")
        self.decoder = Decoder(self.content_encoder.widths, style_dim, bottleneck_blocks, skips,
                               mapping_layers, mapping_hidden, padding, rgb_kernel, full_res_fuse_kernel)

    def encode_style(self, style: torch.Tensor, vgg_features: dict[str, torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``; a VGG style encoder reuses ``vgg_features`` of ``style`` when given."""
        if (vgg_features is not None and isinstance(self.style_encoder, VGGStyleEncoder)
                and all(name in vgg_features for name in self.style_encoder.layers)):
            return self.style_encoder.from_features(vgg_features)
        return self.style_encoder(style)

    def sample_code(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp()

    def decode(self, content: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        z = z.expand(content.shape[0], -1)
        return self.decoder(self.content_encoder(content), z)

    def forward(self, content: torch.Tensor, style: torch.Tensor,
                style_vgg_features: dict[str, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode_style(style, style_vgg_features)
        return self.decode(content, self.sample_code(mu, logvar)), mu, logvar
