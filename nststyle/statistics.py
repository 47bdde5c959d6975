"""Per-channel means and standard deviations of feature maps: AdaIN's style statistics, which the style
encoder reads, the metrics compare and the style-swap inverse network's baselines use."""
from __future__ import annotations

import torch

from .tracing import capturing_graph


def mean_std(features: torch.Tensor, eps: float = 1e-5, unbiased: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and standard deviation ``sqrt(var + eps)`` of ``B x C x H x W``
    features, each ``B x C x 1 x 1`` (unbiased variance by default, as in Huang & Belongie)."""
    batch, channels = features.shape[:2]
    count = features[0, 0].numel()
    if (features.requires_grad and torch.is_grad_enabled()) or features.device.type != "cpu" or capturing_graph():
        flat = features.flatten(2)
        mean, var = flat.mean(-1), flat.var(-1, unbiased=unbiased)
    else:  # batch norm's statistics kernel, 4-6x torch.var on one CPU thread (no autograd: nothing needs it here)
        mean, var = torch.batch_norm_update_stats(features.reshape(1, batch * channels, -1), None, None, 0.0)
        mean, var = mean.view(batch, channels), var.view(batch, channels)
        if unbiased:
            var = var * (count / max(count - 1, 1))
    std = (var + eps).sqrt()
    return mean[..., None, None], std[..., None, None]


def mean_std_vector(features: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """``B x C x H x W`` -> ``B x 2C``: the channel means, then the (biased) standard deviations, in float32."""
    mean, std = mean_std(features.float(), eps, unbiased=False)
    return torch.cat([mean.flatten(1), std.flatten(1)], dim=1)
