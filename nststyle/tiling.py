"""Stylise images larger than memory allows in one pass: overlapping tiles, blended with linear ramps.

The style is summarised once, on the whole style image (the variational model's code, the inverse
network's style activations); only the content is cut. Each tile's output is weighted by a ramp that
rises over the ``overlap`` pixels at its sides, and every pixel is the weighted mean of the tiles that
cover it, so tile borders fade into each other instead of showing as seams.
"""
from __future__ import annotations

from collections.abc import Callable
from itertools import product

import torch
from tqdm.auto import tqdm


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels every ``step`` pixels, the last one flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def ramp(length: int, overlap: int) -> torch.Tensor:
    """Weights along one side of a tile: rising over ``overlap`` pixels at both ends, 1 in between,
    never 0 (so image borders, covered by one tile only, keep their values)."""
    weights = torch.ones(length)
    if overlap > 0:
        rise = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
        count = min(overlap, length // 2)
        weights[:count] = rise[:count]
        weights[length - count:] = rise[:count].flip(0)
    return weights


def stylize_tiled(stylize: Callable[[torch.Tensor], torch.Tensor], content: torch.Tensor, tile: int = 1024,
                  overlap: int = 128, multiple: int = 1, progress: bool = True) -> torch.Tensor:
    """``stylize`` (``1x3xhxw`` -> ``1x3xhxw``, the style already fixed) over overlapping tiles of
    ``content`` (``1x3xHxW``, H and W multiples of ``multiple``); returns ``1x3xHxW`` on the CPU.
    ``tile`` and ``overlap`` are rounded down to multiples of ``multiple``."""
    if content.dim() != 4 or content.shape[0] != 1:
        raise ValueError(f"stylize_tiled takes one 1x3xHxW image, got shape {tuple(content.shape)}")
    tile, overlap = max(tile // multiple, 1) * multiple, overlap // multiple * multiple
    if overlap >= tile:
        raise ValueError(f"tile overlap ({overlap} px) must be smaller than the tile ({tile} px)")
    _, _, height, width = content.shape
    step = tile - overlap
    boxes = list(product(tile_starts(height, tile, step), tile_starts(width, tile, step)))
    output = torch.zeros(1, 3, height, width)
    total = torch.zeros(1, 1, height, width)
    for top, left in tqdm(boxes, desc="tiles", unit="tile", disable=not progress or len(boxes) == 1):
        h, w = min(tile, height), min(tile, width)
        result = stylize(content[..., top:top + h, left:left + w]).float().cpu()
        weight = ramp(h, overlap)[:, None] * ramp(w, overlap)[None, :]
        output[..., top:top + h, left:left + w] += result * weight
        total[..., top:top + h, left:left + w] += weight
    return output / total
