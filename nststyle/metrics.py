"""How close a stylised image is to its photo (content) and to its painting (style), in VGG-19 space.

All distances are relative, so they read the same at any image size and for any VGG weight scale:

- ``content``: the relative squared change of relu4_1, ``||F(out) - F(photo)||^2 / ||F(photo)||^2``
  (0 for the photo itself);
- ``style``: the normalised gap of channel means and standard deviations (AdaIN's statistics), per
  layer ``(||mu_o - mu_s||^2 + ||sigma_o - sigma_s||^2) / (||mu_s||^2 + ||sigma_s||^2)``, averaged
  over relu1_1 ... relu5_1;
- ``gram``: per layer ``||G_o - G_s||_F^2 / ||G_s||_F^2`` of the uncentred Gram matrices, averaged;
- ``w2``: per layer the squared 2-Wasserstein distance between Gaussians fitted to the features
  (``nststyle.losses.W2Loss``), divided by the painting's ``||mu_s||^2 + tr S_s``, averaged.

``StyleMetrics`` encodes each painting once per call and each output once for all four figures.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .features import STYLE_LAYERS, VGGEncoder
from .losses import W2Loss, mean_and_gram, positions
from .swap import mean_std

METRIC_CONTENT_LAYER = "relu4_1"
METRICS = ("content", "style", "gram", "w2")


def relative_gap(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||x - target||^2 / ||target||^2`` per sample over all but the first dimension."""
    return (x - target).square().flatten(1).sum(1) / target.square().flatten(1).sum(1).clamp_min(1e-12)


def _mean_std_vector(features: torch.Tensor) -> torch.Tensor:
    mean, std = mean_std(features.float(), eps=0.0, unbiased=False)
    return torch.cat([mean.flatten(1), std.flatten(1)], dim=1)


class StyleMetrics(nn.Module):
    """``metrics(output, photo, painting) -> {"content", "style", "gram", "w2"}`` (floats).

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
        return {"size": photo.shape[-2:], "content": self.encode(photo)[METRIC_CONTENT_LAYER]}

    @torch.no_grad()
    def painting_target(self, painting: torch.Tensor) -> dict:
        features = self.encode(painting)
        target = {}
        for name in STYLE_LAYERS:
            x = positions(features[name])
            w2 = self.w2.summarize(x.double())
            target[name] = {"mean_std": _mean_std_vector(features[name]), "gram": mean_and_gram(x)[1],
                            "w2": w2, "w2_scale": w2[0].square().sum(1) + w2[2]}  # ||mu_s||^2 + tr S_s
        return target

    @torch.no_grad()
    def forward(self, output: torch.Tensor, photo: torch.Tensor | dict, painting: torch.Tensor | dict
                ) -> dict[str, float]:
        photo = photo if isinstance(photo, dict) else self.photo_target(photo)
        painting = painting if isinstance(painting, dict) else self.painting_target(painting)
        if output.shape[-2:] != photo["size"]:
            output = F.interpolate(output, size=photo["size"], mode="bilinear", antialias=True, align_corners=False)
        out = self.encode(output)
        per_layer = {name: [] for name in METRICS[1:]}
        for name in STYLE_LAYERS:
            target, x = painting[name], positions(out[name])
            per_layer["style"].append(relative_gap(_mean_std_vector(out[name]), target["mean_std"]))
            per_layer["gram"].append(relative_gap(mean_and_gram(x)[1], target["gram"]))
            per_layer["w2"].append(self.w2.distance(x.double(), target["w2"]).clamp_min(0) / target["w2_scale"])
        figures = {"content": float(relative_gap(out[METRIC_CONTENT_LAYER], photo["content"]).mean())}
        figures.update({name: float(torch.stack(values).mean()) for name, values in per_layer.items()})
        return figures
