"""The Chen & Schmidt inverse network: a decoder from VGG-19 relu3_1 activations back to an image.

It mirrors the encoder up to relu3_1 (conv1_1 .. conv3_1, two max-pools): every encoder conv becomes a
conv with in/out channels swapped, every pool an x2 upsampling, read in reverse order:

    relu3_1 (256, H/4) -> conv 256->128 -> up -> conv 128->128 -> conv 128->64 -> up -> conv 64->64 -> conv 64->3

Each conv but the last is followed by a normalisation and a ReLU. The graph is a plain ``nn.Sequential``
with no data-dependent Python control flow, so it traces and exports as it is.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import ReflectionPad

NORMS = ("instance", "batch", "none")
UPSAMPLES = ("nearest", "transposed")
OUTPUTS = ("sigmoid", "clamp")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def _conv(in_channels: int, out_channels: int) -> nn.Module:
    # Reflection padding keeps borders free of the dark frame zero padding paints on decoded images.
    return nn.Sequential(ReflectionPad(1), nn.Conv2d(in_channels, out_channels, 3))


class ClampST(nn.Module):
    """Clamp to [0, 1] on the forward pass, identity gradient on the backward pass (straight-through),
    so pixels that overshoot still receive the loss gradient that pulls them back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (x.clamp(0, 1) - x).detach()


class InverseNet(nn.Module):
    """Decoder Phi^-1: ``Bx{in_channels}xhxw`` activations -> ``Bx3x(h*2^k)x(w*2^k)`` images in [0, 1].

    ``widths`` lists the output width of each upsampling stage (``(128, 64)`` mirrors VGG-19 from
    relu3_1; smaller values make tiny test models). ``norm``: instance | batch | none. ``upsample``:
    nearest (x2 nearest neighbour, then the stage's conv) or transposed (a stride-2 transposed conv in
    place of that pair). ``output``: sigmoid, or clamp (straight-through clamp of a linear output).
    """

    def __init__(self, in_channels: int = 256, widths: tuple[int, ...] | list[int] = (128, 64),
                 norm: str = "instance", upsample: str = "nearest", output: str = "sigmoid"):
        super().__init__()
        for name, value, allowed in (("norm", norm, NORMS), ("upsample", upsample, UPSAMPLES),
                                     ("output", output, OUTPUTS)):
            if value not in allowed:
                raise ValueError(f"InverseNet: unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        self.in_channels = in_channels
        self.scale = 2 ** len(widths)

        def act(channels):
            return [_norm(norm, channels), nn.ReLU(inplace=True)]

        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers += [_conv(channels, width), *act(width)]
            if upsample == "nearest":
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(width, width), *act(width)]
            else:
                layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), *act(width)]
            channels = width
        layers += [_conv(channels, 3), nn.Sigmoid() if output == "sigmoid" else ClampST()]
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)
