"""Reflection padding that keeps its input's dtype and memory format.

Both models pad with reflection (zero padding leaves dark frames around decoded images). ``F.pad``'s reflect
mode is on CPU autocast's float32 list: under bfloat16 autocast every padded convolution paid a cast up, a
float32 pad and a cast down (a third of the inverse network's bfloat16 decoder, ~40 ms of the variational
model's 170 ms at 384 px on one thread). ``reflect_pad`` builds the same values from slice copies, which
autocast leaves alone; tracing, ``torch.export``/ONNX and ``torch.compile`` still see ``F.pad`` (one ONNX Pad).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..tracing import capturing_graph


def reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """``F.pad(x, (pad,) * 4, mode="reflect")`` of a ``B x C x H x W`` tensor: the same values (and gradients),
    in ``x``'s dtype and memory format."""
    height, width = x.shape[-2:]
    if pad == 0:
        return x
    if capturing_graph() or x.dim() != 4 or pad >= min(height, width):  # F.pad explains what does not fit
        return F.pad(x, (pad,) * 4, mode="reflect")
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    out = torch.empty((*x.shape[:2], height + 2 * pad, width + 2 * pad), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    p = pad
    out[:, :, p:-p, p:-p] = x
    out[:, :, :p, p:-p] = x[:, :, 1:p + 1].flip(2)
    out[:, :, -p:, p:-p] = x[:, :, -p - 1:-1].flip(2)
    out[:, :, :, :p] = out[:, :, :, p + 1:2 * p + 1].flip(3)  # the corners: reflected rows, reflected again
    out[:, :, :, -p:] = out[:, :, :, -2 * p - 1:-p - 1].flip(3)
    return out


class ReflectionPad(nn.Module):
    """``nn.ReflectionPad2d(pad)`` through ``reflect_pad``."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reflect_pad(x, self.pad)

    def extra_repr(self) -> str:
        return str(self.pad)


class ReflectConv2d(nn.Conv2d):
    """``nn.Conv2d(..., padding=p, padding_mode="reflect")`` with the padding done by ``reflect_pad`` (the same
    parameters, so checkpoints of either load into the other)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__(in_channels, out_channels, kernel_size, stride)
        self.reflect = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(reflect_pad(x, self.reflect))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reflect={self.reflect}"


def resize_kernel(weight: torch.Tensor, size: int) -> torch.Tensor:
    """A conv's ``O x I x K x K`` kernel as ``O x I x size x size`` (both odd), for a network that starts from one
    with another kernel size: a smaller kernel keeps the centre, plus an even share of the cut-off taps' sum, so
    it answers a flat input as the original does; a larger one pads the original with zeros (the same function)."""
    old = weight.shape[-1]
    if size % 2 == 0 or old % 2 == 0:
        raise ValueError(f"kernel sizes must be odd, got {old} -> {size}")
    if size >= old:
        return F.pad(weight, ((size - old) // 2,) * 4)
    cut = (old - size) // 2
    centre = weight[..., cut:cut + size, cut:cut + size]
    lost = weight.sum((-2, -1), keepdim=True) - centre.sum((-2, -1), keepdim=True)
    return centre + lost / size ** 2
