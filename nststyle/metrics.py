"""How close a stylised image is to its photo (content) and to its painting (style), in VGG-19 space.

All distances are relative, so they read the same at any image size and for any VGG weight scale:

- ``content``: the relative squared change of relu4_1, ``||F(out) - F(photo)||^2 / ||F(photo)||^2``
  (0 for the photo itself);
- ``style``: the normalised gap of channel means and standard deviations (AdaIN's statistics), per
  layer ``(||mu_o - mu_s||^2 + ||sigma_o - sigma_s||^2) / (||mu_s||^2 + ||sigma_s||^2)``, averaged
  over relu1_1 ... relu5_1;
- ``gram``: per layer ``||G_o - G_s||_F^2 / ||G_s||_F^2`` of the uncentred Gram matrices, averaged;
- ``w2``: per layer the squared 2-Wasserstein distance between Gaussians fitted to the features
  (``nststyle.losses.W2Loss``), divided by the painting's ``||mu_s||^2 + tr S_s``, averaged;
- ``structure``: ``1 - correlation`` of the photo's and the output's edge maps (``edge_map``: Sobel gradient
  magnitude of the luminance at half size, averaged over cells of 4 x 4 of those pixels), 0 when the output
  keeps every edge of the photo and adds none. It sees what the VGG figures do not: shapes painted over
  the photo (blobs, smears) and lost outlines, whatever the colours; fine texture within a cell hardly
  moves it (on the held-back pairs the Magenta model scores 0.315; docs/models/variational.md).

- ``local``: the local style distance (``local_style_distance``): every 8 x 8 window of relu2_1 and relu3_1
  positions (stride 4) against its nearest window of the painting, and back. A flat shape in the painting's
  colours has the painting's global statistics; yet a painting has flat windows and edges too, so the nearest
  windows forgive such shapes (on the held-back pairs it ties the Magenta model and the variational model).

- ``flat``: the share of the output's 8 x 8 windows (relu2_1 and relu3_1) whose texture energy (mean channel std)
  is below the painting's lower quartile (``flat_window_share``): 0.25 for the painting's own windows, more for
  flat shapes painted where the painting has texture, less for texture everywhere.

``StyleMetrics`` encodes each painting once per call and each output once for all its figures.

``stability_gain`` (the evaluation's ``stability=true``): how far an output moves when its photo's tones move
by a faint smooth ``low_frequency_change`` (+-0.05), as the mean squared change of the output over that of the
photo. A system that paints the paintings' contrast onto the faint gradients of skies and walls moves a lot:
that is where outlined shapes at the same places whatever the painting come from (docs/models/variational.md;
Gupta et al. 2017 on the stability of style transfer).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .features import STYLE_LAYERS, VGGEncoder
from .losses import W2Loss, mean_and_gram, positions
from .statistics import mean_std_vector

METRIC_CONTENT_LAYER = "relu4_1"
METRICS = ("content", "style", "local", "flat", "gram", "w2", "structure")
LOCAL_LAYERS = ("relu2_1", "relu3_1")
# the style figure per layer, as well (where a system's gap lives: strokes at relu3_1, palette at relu1_1)
STYLE_BY_LAYER = tuple(f"style_{name}" for name in STYLE_LAYERS)


def relative_gap(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||x - target||^2 / ||target||^2`` per sample over all but the first dimension."""
    return (x - target).square().flatten(1).sum(1) / target.square().flatten(1).sum(1).clamp_min(1e-12)


SOBEL = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def _pooled_edges(images: torch.Tensor, pool: int) -> torch.Tensor:
    """``Bx3xHxW`` -> ``Bx1x(H/pool)x(W/pool)``: Sobel magnitude of the luminance averaged over ``pool`` x ``pool``."""
    luma = torch.tensordot(torch.tensor(LUMA, dtype=images.dtype, device=images.device), images, dims=([0], [1]))
    luma = F.avg_pool2d(luma[:, None], pool, ceil_mode=True)
    kernel = SOBEL.to(images)
    gradients = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), torch.stack([kernel, kernel.t()])[:, None])
    return (gradients.square().sum(1, keepdim=True) + 1e-8).sqrt()


def edge_map(images: torch.Tensor, cell: int = 4) -> torch.Tensor:
    """``Bx3xHxW`` images in [0, 1] -> ``Bx1x(H/2/cell)x(W/2/cell)``: where the edges are and how strong,
    at the scale of shapes rather than of strokes (differentiable: the structure term of training uses it)."""
    return F.avg_pool2d(_pooled_edges(images, 2), cell, ceil_mode=True)


def invented_edges(output: torch.Tensor, photo: torch.Tensor, pool: int = 8, per: str = "output") -> torch.Tensor:
    """Per sample (``B``): the output's edges at the scale of shapes (the luminance averaged ``pool`` x ``pool``
    first, so brush strokes and textures average out) in the photo's flatter half at that scale, over their mean
    in the whole image (``per="output"``, the evaluation's figure). Shapes painted where the photo has none (blobs
    and their outlines in skies and walls) raise it; about 0.2-0.3 for the photo itself, 1 for edges spread evenly.
    ``per="photo"`` divides by the photo's mean edges instead, a fixed scale: the training term, which the network
    cannot lower by painting more edges elsewhere. ``output`` is resized to the photo (differentiable)."""
    if output.shape[-2:] != photo.shape[-2:]:
        output = F.interpolate(output, size=photo.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
    output_edges, photo_edges = _pooled_edges(output, pool).flatten(1), _pooled_edges(photo, pool).flatten(1)
    flat = photo_edges <= photo_edges.median(1, keepdim=True).values
    scale = {"output": output_edges, "photo": photo_edges}[per].mean(1).clamp_min(1e-12)
    return (output_edges * flat).sum(1) / flat.sum(1) / scale


def structure_distance(output: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """``1 - corr(edge_map(output), edge_map(photo))`` per sample (``B``): 0 for the photo itself, for
    any brightness/contrast change of it and for a recoloured photo with the same luminance edges."""
    return _edge_gap(edge_map(output), edge_map(photo))


def low_frequency_change(images: torch.Tensor, cells: int = 12, amplitude: float = 0.05,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """A faint smooth change of each image's tones (``B x 1 x H x W``, the same for R, G and B): uniform values in
    [-amplitude, amplitude] on a grid of ``cells`` along the shorter side, interpolated bilinearly."""
    height, width = images.shape[-2:]
    cell = min(height, width) / cells
    grid = torch.rand(len(images), 1, math.ceil(height / cell) + 1, math.ceil(width / cell) + 1, generator=generator,
                      device=images.device if generator is None else generator.device)
    change = amplitude * F.interpolate(grid * 2 - 1, size=(height, width), mode="bilinear", align_corners=True)
    return change.to(images.device)


def stability_gain(output: torch.Tensor, moved: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    """``mean((moved - output)^2) / mean(change^2)``: the outputs' change for the photos' ``change``."""
    return (moved.float() - output.float()).square().mean() / change.float().square().mean()


def _edge_gap(output_edges: torch.Tensor, photo_edges: torch.Tensor) -> torch.Tensor:
    x, y = output_edges.flatten(1), photo_edges.flatten(1)
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    return 1 - (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-12)


def window_statistics(features: torch.Tensor, window: int = 8, stride: int = 4) -> torch.Tensor:
    """``B x C x H x W`` -> ``B x N x 2C``: channel means and stds of every ``window`` x ``window`` window of positions
    (``stride`` apart; one window of the whole map when it is smaller than ``window``)."""
    features = features.float()
    window = min(window, *features.shape[-2:])
    mean = F.avg_pool2d(features, window, stride)
    std = (F.avg_pool2d(features.square(), window, stride) - mean.square()).clamp_min(1e-8).sqrt()
    return torch.cat([mean, std], 1).flatten(2).transpose(1, 2)


def local_style_gap(output_windows: torch.Tensor, painting_windows: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per sample (``B``): half the mean gap of each output window to its nearest painting window plus half the
    mean gap of each painting window to its nearest output window; a gap is the squared distance of two windows'
    (mean, std) vectors over ``scale`` (``B``: the painting's ``sum over channels of mu^2 + sigma^2``)."""
    gaps = torch.cdist(output_windows, painting_windows.to(output_windows)).square()
    nearest = 0.5 * (gaps.min(2).values.mean(1) + gaps.min(1).values.mean(1))
    return nearest / scale.clamp_min(1e-12)


def local_style_distance(output_features: dict[str, torch.Tensor], painting_features: dict[str, torch.Tensor],
                         layers: tuple[str, ...] = LOCAL_LAYERS) -> torch.Tensor:
    """The evaluation's local style figure per sample (``B``; differentiable, so also a training term): the mean
    over ``layers`` of ``local_style_gap`` between the output's and its painting's windows."""
    gaps = []
    for name in layers:
        target = painting_features[name].float()
        scale = mean_std_vector(target).square().sum(1)
        gaps.append(local_style_gap(window_statistics(output_features[name]), window_statistics(target), scale))
    return torch.stack(gaps).mean(0)


def window_energy(features: torch.Tensor, window: int = 8, stride: int = 4) -> torch.Tensor:
    """``B x C x H x W`` -> ``B x N``: the mean over channels of each window's standard deviation (its texture)."""
    statistics = window_statistics(features, window, stride)
    return statistics[..., statistics.shape[-1] // 2:].mean(-1)


def flat_window_share(output_features: dict[str, torch.Tensor], painting_features: dict[str, torch.Tensor],
                      layers: tuple[str, ...] = LOCAL_LAYERS) -> torch.Tensor:
    """Per sample (``B``), averaged over ``layers``: the share of the output's windows flatter than the painting's
    lower quartile of ``window_energy``. Flat shapes with outlines pass the nearest-window figure (a painting has
    flat windows and edges too) but raise this share; the painting itself scores 0.25."""
    shares = []
    for name in layers:
        quartile = window_energy(painting_features[name]).float().quantile(0.25, dim=1, keepdim=True)
        shares.append((window_energy(output_features[name]) < quartile).float().mean(1))
    return torch.stack(shares).mean(0)


class StyleMetrics(nn.Module):
    """``metrics(output, photo, painting) -> {"content", "style", "local", "flat", "gram", "w2", "structure",
    "style_relu1_1", ..., "style_relu5_1"}`` (floats; ``style`` is the mean of the last five).

    ``output`` and ``photo`` are ``1x3xHxW`` in [0, 1] (``output`` is resized to the photo's size when
    it differs); ``painting`` may have any size. ``photo`` and ``painting`` may also be what
    ``photo_target`` / ``painting_target`` made of them, so that scoring many outputs against the same
    images encodes each image once."""

    def __init__(self, vgg_weights: str = "caffe", device: str | torch.device = "cpu"):
        super().__init__()
        self.encoder = VGGEncoder(STYLE_LAYERS + (METRIC_CONTENT_LAYER,), weights=vgg_weights).to(device).eval()
        self.w2 = W2Loss({name: 1.0 for name in STYLE_LAYERS})
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: value.float() for name, value in self.encoder(images.to(self.device).clamp(0, 1)).items()}

    @torch.no_grad()
    def photo_target(self, photo: torch.Tensor) -> dict:
        photo = photo.to(self.device).clamp(0, 1)
        return {"size": photo.shape[-2:], "content": self.encode(photo)[METRIC_CONTENT_LAYER],
                "edges": edge_map(photo.float())}

    @torch.no_grad()
    def painting_target(self, painting: torch.Tensor) -> dict:
        features = self.encode(painting)
        target = {}
        for name in STYLE_LAYERS:
            x = positions(features[name])
            w2 = self.w2.summarize(x.double())
            target[name] = {"mean_std": mean_std_vector(features[name]), "gram": mean_and_gram(x)[1],
                            "w2": w2, "w2_scale": w2[0].square().sum(1) + w2[2]}  # ||mu_s||^2 + tr S_s
        target["features"] = {name: features[name] for name in LOCAL_LAYERS}
        return target

    @torch.no_grad()
    def forward(self, output: torch.Tensor, photo: torch.Tensor | dict, painting: torch.Tensor | dict
                ) -> dict[str, float]:
        photo = photo if isinstance(photo, dict) else self.photo_target(photo)
        painting = painting if isinstance(painting, dict) else self.painting_target(painting)
        if output.shape[-2:] != photo["size"]:
            output = F.interpolate(output, size=photo["size"], mode="bilinear", antialias=True, align_corners=False)
        out = self.encode(output)
        per_layer = {name: [] for name in ("style", "gram", "w2")}
        for name in STYLE_LAYERS:
            target, x = painting[name], positions(out[name])
            per_layer["style"].append(relative_gap(mean_std_vector(out[name]), target["mean_std"]))
            per_layer["gram"].append(relative_gap(mean_and_gram(x)[1], target["gram"]))
            per_layer["w2"].append(self.w2.distance(x.double(), target["w2"]).clamp_min(0) / target["w2_scale"])
        figures = {"content": float(relative_gap(out[METRIC_CONTENT_LAYER], photo["content"]).mean())}
        figures.update({name: float(torch.stack(values).mean()) for name, values in per_layer.items()})
        figures["local"] = float(local_style_distance(out, painting["features"]).mean())
        figures["flat"] = float(flat_window_share(out, painting["features"]).mean())
        edges = edge_map(output.to(self.device).clamp(0, 1).float())
        figures["structure"] = float(_edge_gap(edges, photo["edges"]).mean())
        figures.update({f"style_{name}": float(gap.mean()) for name, gap in zip(STYLE_LAYERS, per_layer["style"])})
        return figures
