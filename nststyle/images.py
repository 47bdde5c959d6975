"""Image files <-> float tensors in [0, 1] (RGB, ``3xHxW``), with errors a user can read."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# the encoders halve an image 4 times (VGG relu5_1) or 3 times (the variational model): below this the
# feature maps vanish
MIN_SIDE = 16


class ImageError(ValueError):
    """An input image is missing, unreadable or not an image (message is one line)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any PIL mode (L, P, RGBA, CMYK, I;16, ...) to RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: PIL's convert("RGB") clips instead of rescaling.
        scale = 1 / 257 if image.mode.startswith("I;16") else 1 / 65793
        image = image.point(lambda v: v * scale).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file as RGB, or raise ``ImageError``."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if path.is_dir():
        raise ImageError(f"expected an image file, got a directory: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            rgb = to_rgb(image)
    except Image.DecompressionBombError as error:
        # more than 2 x Image.MAX_IMAGE_PIXELS: decoding would take GBs of memory
        raise ImageError(f"image too large: {path}: {str(error).split(', could')[0]}; downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"cannot read image {path}: {str(error).splitlines()[0]}") from None
    if min(rgb.size) < MIN_SIDE:
        raise ImageError(f"image too small: {path} is {rgb.width}x{rgb.height} (at least {MIN_SIDE} px a side)")
    return rgb


def resize_max(image: torch.Tensor, max_size: int | None, multiple: int = 1) -> torch.Tensor:
    """Downscale ``[B]x3xHxW`` so that the longer side is at most ``max_size`` (never upscale), then
    resize H and W down to a multiple of ``multiple`` (encoder-decoders with strided layers need it)."""
    h, w = image.shape[-2:]
    if max_size and max(h, w) > max_size:
        scale = max_size / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
    if multiple > 1:
        h, w = max(multiple, h - h % multiple), max(multiple, w - w % multiple)
    if (h, w) == tuple(image.shape[-2:]):
        return image
    batch = image if image.dim() == 4 else image[None]
    resized = F.interpolate(batch, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return resized if image.dim() == 4 else resized[0]


def load_image(path: str | Path, max_size: int | None = None, multiple: int = 1) -> torch.Tensor:
    """Read an image file as a contiguous ``3xHxW`` float tensor in [0, 1]."""
    tensor = pil_to_tensor(open_image(path)).float().div_(255)
    # contiguous: an image that needs no resizing would otherwise stay a permuted view of the HxWx3
    # pixels, and L-BFGS (which flattens gradients with .view) fails on it
    return resize_max(tensor, max_size, multiple).contiguous()


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write a ``3xHxW`` (or ``1x3xHxW``) tensor in [0, 1] to ``path``; parent folders are created."""
    path = Path(path)
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"save_image takes one image, got a batch of {image.shape[0]}")
        image = image[0]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        to_pil_image(image.detach().float().clamp(0, 1).cpu()).save(path)
    except (OSError, ValueError) as error:  # a read-only or file-in-the-way folder, an unknown suffix
        raise ImageError(f"cannot write {path}: {getattr(error, 'strerror', None) or error}") from None
    return path


def save_grid(images: list[torch.Tensor] | torch.Tensor, path: str | Path, nrow: int, size: int | None = 256,
              padding: int = 2) -> Path:
    """Save a contact sheet; images of different sizes are resized to ``size`` px tall."""
    if size is not None:
        images = [F.interpolate(im[None].float(), size=(size, max(1, round(size * im.shape[-1] / im.shape[-2]))),
                                mode="bilinear", antialias=True, align_corners=False)[0] for im in images]
        width = max(im.shape[-1] for im in images)
        images = [F.pad(im, (0, width - im.shape[-1]), value=1.0) for im in images]
    grid = make_grid([im.detach().cpu().clamp(0, 1) for im in images], nrow=nrow, padding=padding, pad_value=1.0)
    return save_image(grid, path)


def list_images(path: str | Path) -> list[Path]:
    """A file, or the sorted image files of a folder (non-recursive)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
        return files
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    return [path]


def mean_colour(image: torch.Tensor) -> torch.Tensor:
    """``Bx3xHxW`` -> ``Bx3x1x1``: the mean RGB."""
    return image.mean((-2, -1), keepdim=True)


def shift_mean_colour(image: torch.Tensor, target: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """``image`` (``Bx3xHxW``) moved by ``strength`` x (``target`` - its mean RGB), clamped to [0, 1]; ``target``
    is a mean RGB (``Bx3x1x1``, e.g. ``mean_colour(painting)``): a stylised image given the centre of its
    painting's palette."""
    return (image + strength * (target - mean_colour(image))).clamp(0, 1)


def colour_statistics(image: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """``...x3xHxW`` -> the RGB mean (``...x3x1``) and covariance (``...x3x3``, n - 1, ``eps`` on the diagonal),
    in float64: what ``match_colour_statistics`` moves an image to."""
    flat = image.reshape(*image.shape[:-2], -1).double()
    mean = flat.mean(-1, keepdim=True)
    centred = flat - mean
    cov = centred @ centred.transpose(-1, -2) / max(flat.shape[-1] - 1, 1)
    return mean, cov + eps * torch.eye(3, dtype=cov.dtype, device=cov.device)


def _covariance_power(cov: torch.Tensor, power: float, eps: float = 1e-5) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    return vectors @ torch.diag_embed(values.clamp_min(eps) ** power) @ vectors.transpose(-1, -2)


def match_colour_statistics(source: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor,
                            strength: float = 1.0) -> torch.Tensor:
    """``source`` (``...x3xHxW``) moved ``strength`` of the way (a per-pixel blend) to the linear colour
    transfer that gives it the RGB ``mean`` and ``cov`` (``colour_statistics``):
    x -> mu_t + C_t^1/2 C_s^-1/2 (x - mu_s). 1: exactly those statistics (up to clamping to [0, 1])."""
    source_mean, source_cov = colour_statistics(source)
    eye = torch.eye(3, dtype=cov.dtype, device=cov.device)
    transfer = _covariance_power(cov, 0.5) @ _covariance_power(source_cov, -0.5)
    # the blend folded into one affine map, applied in the image's dtype (a 4K image: no float64 copy of it)
    matrix = eye + strength * (transfer - eye)
    offset = strength * (mean - transfer @ source_mean)
    flat = source.reshape(*source.shape[:-2], -1)
    out = matrix.to(source.dtype) @ flat + offset.to(source.dtype)
    return out.reshape(source.shape).clamp(0, 1)


def recolour(image: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, shift: float = 1.0,
             match: float = 0.0) -> torch.Tensor:
    """What a model card's ``colour_shift`` and ``colour_match`` do to a result (``Bx3xHxW``): its mean RGB moved
    ``shift`` of the way to ``mean`` (``Bx3x1x1``, ``mean_colour`` of the painting), then its RGB covariance
    ``match`` of the way to ``cov`` (``Bx3x3``, ``colour_statistics`` of the painting), its mean kept. Inference,
    the quality mode's refinement and training (scored after it) all recolour through here."""
    if shift:
        image = shift_mean_colour(image, mean, shift)
    if match:
        image = match_colour_statistics(image, colour_statistics(image)[0], cov, match)
    return image


def painting_colours(paintings: list[torch.Tensor], weights: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted mean RGB (``Bx3x1x1``) and RGB covariance (``Bx3x3``) of ``paintings``: what a result is
    recoloured towards (a mix's paintings, or a painting and the photo at alpha < 1)."""
    mean = sum(w * mean_colour(p) for p, w in zip(paintings, weights)) / sum(weights)
    cov = sum(w * colour_statistics(p)[1] for p, w in zip(paintings, weights)) / sum(weights)
    return mean, cov


def recolour_like(image: torch.Tensor, paintings: list[torch.Tensor], weights: list[float], shift: float,
                  match: float) -> torch.Tensor:
    """``recolour`` towards the weighted colours of ``paintings`` (``painting_colours``); as it is at 0 and 0."""
    if not (shift or match):
        return image
    return recolour(image, *painting_colours(paintings, weights), shift, match)


def match_color(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Give ``source`` (``...x3xHxW``) the colour mean and covariance of ``target`` (Gatys' colour
    preservation by linear colour transfer)."""
    return match_colour_statistics(source, *colour_statistics(target))
