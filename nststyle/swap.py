"""Style swap (Chen & Schmidt 2016) and AdaIN (Huang & Belongie 2017) on feature maps.

``style_swap`` replaces every ``k x k`` content patch by the style patch with the highest normalised
cross-correlation and averages the overlaps. The plain formulation is a convolution with the
normalised style patches as filters, an argmax over channels, a one-hot transposed convolution with
the raw patches and a division by the overlap count. It needs a ``#content patches x #style patches``
tensor (about 1 GB for relu3_1 of two 512 px images) and twice the multiply-adds of the correlation.
This implementation computes the same result with bounded memory and about a ninth of the work:

* correlation: a patch correlation is the sum over the ``k*k`` offsets of pixel-to-pixel dot products,
  so one matrix product of content pixels with a band of style pixels, then shifted sums
  (separable: ``k`` shifts along x, then ``k`` along y), gives every score of the band; the bands of
  style rows are processed in turn with a running max/argmax.
* rebuild: gather the chosen raw style pixels for each of the ``k*k`` offsets and add them at the
  shifted position (what ``F.fold`` of the gathered patches does, without materialising the
  ``C*k*k x #patches`` tensor), then divide by the number of patches covering each pixel.

The content patch's own norm is the same for every candidate, so it never changes the argmax and is
not computed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_ELEMENTS = 1 << 24  # ~64 MB of float32 scores per chunk


def _patch_grid(size: int, patch_size: int, stride: int) -> int:
    return (size - patch_size) // stride + 1


def _strided(start: int, count: int, stride: int) -> slice:
    """Positions ``start, start + stride, ...`` (``count`` of them) as a slice."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def _check_inputs(content: torch.Tensor, style: torch.Tensor, patch_size: int, stride: int) -> None:
    if content.dim() != 4 or style.dim() != 4:
        raise ValueError(f"style_swap expects BxCxHxW feature maps, got {tuple(content.shape)} and {tuple(style.shape)}")
    if content.shape[1] != style.shape[1]:
        raise ValueError(f"channel mismatch: content has {content.shape[1]}, style has {style.shape[1]}")
    if style.shape[0] not in (1, content.shape[0]):
        raise ValueError(f"style batch must be 1 or the content batch ({content.shape[0]}), got {style.shape[0]}")
    if patch_size < 1 or stride < 1:
        raise ValueError(f"patch_size and stride must be >= 1, got {patch_size} and {stride}")
    if min(content.shape[-2:]) < patch_size or min(style.shape[-2:]) < patch_size:
        raise ValueError(f"feature maps {tuple(content.shape[-2:])} / {tuple(style.shape[-2:])} are smaller than "
                         f"the {patch_size}x{patch_size} patch")


def style_patch_norms(style: torch.Tensor, patch_size: int, stride: int, eps: float = 1e-8) -> torch.Tensor:
    """L2 norm of every ``k x k`` style patch, ``Bs x Hs' x Ws'`` (floored at ``eps`` for empty patches)."""
    squared = F.avg_pool2d(style.pow(2).sum(1, keepdim=True), patch_size, stride) * patch_size ** 2
    return squared.squeeze(1).clamp_min(0).sqrt().clamp_min(eps)


def _shifted_sum(view_at, count: int) -> torch.Tensor:
    """``view_at(0) + ... + view_at(count - 1)``, accumulated in place (one buffer, not count)."""
    total = view_at(0).clone(memory_format=torch.contiguous_format)
    for offset in range(1, count):
        total += view_at(offset)
    return total


def best_style_patches(content: torch.Tensor, style: torch.Tensor, patch_size: int = 3, stride: int = 1,
                       chunk_size: int | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Index (row-major in the style patch grid) of the best-matching style patch for every content
    patch, ``B x Hc' x Wc'``. ``chunk_size`` bounds the style patches scored at once (rounded to whole
    rows of the style patch grid); by default a chunk holds about 16M scores."""
    _check_inputs(content, style, patch_size, stride)
    batch, channels, height, width = content.shape
    k, s = patch_size, stride
    rows_c, cols_c = _patch_grid(height, k, s), _patch_grid(width, k, s)
    rows_s, cols_s = _patch_grid(style.shape[-2], k, s), _patch_grid(style.shape[-1], k, s)
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_ELEMENTS // (batch * height * width)
    rows_per_chunk = max(1, chunk_size // cols_s)

    inverse_norms = style_patch_norms(style, k, s, eps).reciprocal()  # Bs x rows_s x cols_s
    content_pixels = content.flatten(2).transpose(1, 2)  # B x HW x C
    best_score = content.new_full((batch, rows_c * cols_c), -float("inf"))
    best_index = torch.zeros(batch, rows_c * cols_c, dtype=torch.long, device=content.device)
    for first in range(0, rows_s, rows_per_chunk):
        rows = min(rows_per_chunk, rows_s - first)
        band = style[:, :, first * s: (first + rows - 1) * s + k]  # the style pixel rows these patches use
        # pixel[b, y, x, r, c] = <content[b, :, y, x], band[b, :, r, c]>
        pixel = (content_pixels @ band.flatten(2)).view(batch, height, width, band.shape[-2], band.shape[-1])
        # patch score = sum over offsets (dy, dx) of pixel[y*s+dy, x*s+dx, r*s+dy, c*s+dx]; separable.
        along_x = _shifted_sum(lambda dx: pixel[:, :, _strided(dx, cols_c, s), :, _strided(dx, cols_s, s)], k)
        del pixel
        score = _shifted_sum(lambda dy: along_x[:, _strided(dy, rows_c, s), :, _strided(dy, rows, s)], k)
        del along_x
        score *= inverse_norms[:, None, None, first: first + rows]  # B x rows_c x cols_c x rows x cols_s
        chunk_best, chunk_index = score.reshape(batch, rows_c * cols_c, rows * cols_s).max(-1)
        better = chunk_best > best_score  # strict: ties keep the earlier (lower) index, like a plain argmax
        best_score = torch.where(better, chunk_best, best_score)
        best_index = torch.where(better, chunk_index + first * cols_s, best_index)
    return best_index.view(batch, rows_c, cols_c)


def rebuild_from_patches(style: torch.Tensor, index: torch.Tensor, output_size: tuple[int, int],
                         patch_size: int = 3, stride: int = 1) -> torch.Tensor:
    """Place style patch ``index[b, y, x]`` at content patch position ``(y, x)`` and average overlaps.

    Pixels no patch covers (stride > patch size, or a border the stride skips) are 0.
    """
    batch, (rows_c, cols_c), k, s = index.shape[0], index.shape[-2:], patch_size, stride
    channels, style_width = style.shape[1], style.shape[-1]
    cols_s = _patch_grid(style_width, k, s)
    top, left = (index // cols_s) * s, (index % cols_s) * s  # style pixel of each chosen patch's corner
    style_pixels = style.flatten(2).expand(batch, -1, -1)
    out = style.new_zeros(batch, channels, *output_size)
    coverage = style.new_zeros(1, 1, *output_size)
    for dy in range(k):
        for dx in range(k):
            source = ((top + dy) * style_width + left + dx).view(batch, 1, -1).expand(-1, channels, -1)
            chosen = style_pixels.gather(2, source).view(batch, channels, rows_c, cols_c)
            out[:, :, _strided(dy, rows_c, s), _strided(dx, cols_c, s)] += chosen
            coverage[:, :, _strided(dy, rows_c, s), _strided(dx, cols_c, s)] += 1
    return out / coverage.clamp_min(1)


def style_swap(content_features: torch.Tensor, style_features: torch.Tensor, patch_size: int = 3, stride: int = 1,
               chunk_size: int | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Chen & Schmidt's style swap, exact. Content ``B x C x H x W``; style ``1 x C x Hs x Ws`` (one style
    for every content) or ``B x C x Hs x Ws`` (pairwise). Returns ``B x C x H x W``.

    Each content patch is replaced by the raw style patch maximising ``<c, s> / ||s||``; overlapping
    patches are averaged. When the stride does not land on the last rows/columns (``stride <= patch_size``),
    the content map is edge-padded to the next patch position and the result cropped, so every pixel is
    covered (otherwise a border 1 to ``stride - 1`` pixels wide would be 0 and decode as a dark frame).
    With ``stride > patch_size`` the gaps between patches are 0. Memory is bounded by ``chunk_size``
    style patches at a time.
    """
    _check_inputs(content_features, style_features, patch_size, stride)
    height, width = content_features.shape[-2:]
    pad_rows, pad_cols = ((-(size - patch_size)) % stride if stride <= patch_size else 0 for size in (height, width))
    content_features = F.pad(content_features, (0, pad_cols, 0, pad_rows), mode="replicate")
    index = best_style_patches(content_features, style_features, patch_size, stride, chunk_size, eps)
    swapped = rebuild_from_patches(style_features, index, content_features.shape[-2:], patch_size, stride)
    return swapped[..., :height, :width]


def mean_std(features: torch.Tensor, eps: float = 1e-5, unbiased: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and standard deviation ``sqrt(var + eps)`` of ``B x C x H x W``
    features, each ``B x C x 1 x 1`` (AdaIN statistics; unbiased variance by default, as in Huang & Belongie)."""
    flat = features.flatten(2)
    mean = flat.mean(-1)
    std = (flat.var(-1, unbiased=unbiased) + eps).sqrt()
    return mean[..., None, None], std[..., None, None]


def adain_with_stats(content_features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                     eps: float = 1e-5) -> torch.Tensor:
    """Normalise each content channel, then give it the target ``mean``/``std`` (``B x C x 1 x 1``, or
    anything that broadcasts, e.g. predicted from a style code)."""
    content_mean, content_std = mean_std(content_features, eps)
    return (content_features - content_mean) / content_std * std + mean


def adain(content_features: torch.Tensor, style_features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalisation: content features with the style's per-channel mean and std.
    The style batch is 1 (shared) or the content batch (pairwise)."""
    return adain_with_stats(content_features, *mean_std(style_features, eps), eps=eps)
