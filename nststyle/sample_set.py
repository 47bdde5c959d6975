"""The embedded sample set: small content and style shards made offline in seconds.

Content: crops and flips of the photos scikit-image ships (astronaut, chelsea, coffee, rocket, ...).
Style: procedurally painted textures (brush strokes along flow fields, colour fields, wavy stripes,
stained-glass mosaics, swirls, pointillism, cubist shards, drip paintings, watercolour glazes), each
with its own harmonious palette. Everything is drawn from one seed, so the set is identical on
every machine. Enough to smoke-test training end to end; not enough to train a good model.
"""
from __future__ import annotations

import colorsys
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from nststyle.shards import make_shards, manifest_path, shard_pattern

CONTENT_SIZE = 288   # shorter side of the content crops
STYLE_SIZES = ((320, 320), (384, 320), (320, 384))  # (width, height)
SHARDS = 8           # per set: enough for 2 ranks x 4 workers to read disjoint shards
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "motorcycle", "camera", "gravel")


# ----------------------------------------------------------------------------- content

def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    return image


def content_images(count: int = 48, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """``count`` random crops (scale 55-100 % of the shorter side, aspect up to 4:3, random flips)
    of scikit-image's photos, shorter side ``CONTENT_SIZE``."""
    rng = np.random.default_rng(seed)
    photos = {name: Image.fromarray(_photo(name)) for name in PHOTOS}
    images = []
    for index in range(count):
        name = PHOTOS[index % len(PHOTOS)]
        photo = photos[name]
        side = min(photo.size) * rng.uniform(0.55, 1.0)
        aspect = rng.uniform(1.0, 4 / 3)
        w, h = (side * aspect, side) if rng.random() < 0.5 else (side, side * aspect)
        w, h = min(w, photo.width), min(h, photo.height)
        left, top = rng.uniform(0, photo.width - w), rng.uniform(0, photo.height - h)
        scale = CONTENT_SIZE / min(w, h)
        crop = photo.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS,
                            box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        images.append((f"{name}-{index:02d}", crop))
    return images


# ----------------------------------------------------------------------------- texture helpers

def palette(rng: np.random.Generator, count: int = 5) -> np.ndarray:
    """``count x 3`` RGB colours in [0, 1] from a colour-wheel scheme around a random hue."""
    schemes = ((0, 0.06, -0.06, 0.12, -0.12), (0, 0.5, 0.04, 0.54, -0.04), (0, 1 / 3, 2 / 3, 0.05, 0.38),
               (0, 0.42, 0.58, 0.03, 0.45), (0, 0.25, 0.5, 0.75, 0.1))
    offsets = schemes[rng.integers(len(schemes))]
    base = rng.random()
    colours = []
    for i in range(count):
        hue = (base + offsets[i % len(offsets)] + rng.normal(0, 0.02)) % 1.0
        colours.append(colorsys.hsv_to_rgb(hue, rng.uniform(0.35, 0.95), rng.uniform(0.35, 1.0)))
    if rng.random() < 0.5:  # a near-black or near-white accent, as painters use
        colours[rng.integers(count)] = (0.08, 0.07, 0.06) if rng.random() < 0.5 else (0.95, 0.93, 0.88)
    return np.array(colours)


def noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, octaves: int = 4) -> np.ndarray:
    """Smooth fractal noise in [0, 1]: bicubic-upsampled random grids, halving amplitude per octave."""
    h, w = shape
    total = np.zeros(shape, np.float32)
    for octave in range(octaves):
        n = cells * 2 ** octave
        grid = Image.fromarray(rng.random((n, n)).astype(np.float32), mode="F")
        total += np.asarray(grid.resize((w, h), Image.Resampling.BICUBIC)) * 0.5 ** octave
    total -= total.min()
    return total / max(total.max(), 1e-6)


def colour_ramp(values: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] through the colours (piecewise linear): ``HxWx3``."""
    stops = np.linspace(0, 1, len(colours))
    return np.stack([np.interp(values, stops, colours[:, c]) for c in range(3)], -1)


def to_image(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def canvas_texture(image: Image.Image, rng: np.random.Generator, strength: float = 0.05) -> Image.Image:
    """Multiply by a faint woven-canvas pattern and grain."""
    h, w = image.height, image.width
    y, x = np.mgrid[0:h, 0:w]
    weave = np.sin(x * 2.1) * np.sin(y * 2.1) * 0.5 + rng.normal(0, 0.5, (h, w))
    rgb = np.asarray(image, np.float32) / 255 * (1 + strength * weave)[..., None]
    return to_image(rgb)


def draw_strokes(image: Image.Image, rng: np.random.Generator, angle: np.ndarray, colour_source: np.ndarray,
                 count: int, length: tuple[float, float], width: tuple[int, int], jitter: float = 0.06) -> Image.Image:
    """Paint ``count`` straight strokes oriented by the ``angle`` field, each coloured from
    ``colour_source`` (HxWx3) at its centre plus a little jitter."""
    h, w = angle.shape
    x, y = rng.uniform(0, w, count), rng.uniform(0, h, count)
    row, col = y.astype(int), x.astype(int)
    a = angle[row, col] + rng.normal(0, 0.15, count)
    half = rng.uniform(*length, count) / 2
    dx, dy = np.cos(a) * half, np.sin(a) * half
    fills = _fills(colour_source[row, col] + rng.normal(0, jitter, (count, 3)))
    radii = rng.integers(width[0], width[1] + 1, count) / 2
    draw = ImageDraw.Draw(image)
    for i in range(count):
        ends = ((x[i] - dx[i], y[i] - dy[i]), (x[i] + dx[i], y[i] + dy[i]))
        draw.line(ends, fill=fills[i], width=int(2 * radii[i]))
        for end_x, end_y in ends:  # round brush tips
            draw.ellipse([end_x - radii[i], end_y - radii[i], end_x + radii[i], end_y + radii[i]], fill=fills[i])
    return image


def _fills(colours: np.ndarray) -> list[tuple[int, int, int]]:
    """Nx3 floats -> PIL fill tuples."""
    return [tuple(c) for c in (np.clip(colours, 0, 1) * 255).astype(int).tolist()]


# ----------------------------------------------------------------------------- styles

def brush_strokes(rng, shape):
    colours = palette(rng)
    base = colour_ramp(noise(rng, shape, 3), colours)
    flow = noise(rng, shape, 2, octaves=2) * 2 * math.pi * rng.uniform(0.5, 1.5) + rng.uniform(0, math.pi)
    image = to_image(base)
    image = draw_strokes(image, rng, flow, base, 1400, (14, 40), (3, 8))
    image = draw_strokes(image, rng, flow, base, 500, (8, 20), (2, 4), jitter=0.12)
    return image.filter(ImageFilter.GaussianBlur(0.6))


def colour_fields(rng, shape):
    h, w = shape
    colours = palette(rng, 4)
    rgb = np.broadcast_to(colours[0], (h, w, 3)).copy()
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    # two or three stacked fields of random heights with thin gaps between them (Rothko)
    heights = rng.dirichlet(np.full(int(rng.integers(2, 4)), 3.0)) * 0.86
    edges = 0.07 + np.concatenate([[0], np.cumsum(heights)])
    for i, (top, bottom) in enumerate(zip(edges[:-1] + 0.02, edges[1:] - 0.02)):
        ragged = noise(rng, shape, 6) * 0.05
        inside = np.minimum(y - top, bottom - y) + ragged - 0.03
        inside = np.minimum(inside, np.minimum(x - 0.07, 0.93 - x) + ragged)
        mask = np.clip(inside / 0.025 + 0.5, 0, 1)[..., None]
        rgb = rgb * (1 - mask) + colours[1 + i % 3] * mask
    rgb *= 0.85 + 0.3 * noise(rng, shape, 24, octaves=3)[..., None]
    return to_image(rgb).filter(ImageFilter.GaussianBlur(1.0))


def wavy_stripes(rng, shape):
    h, w = shape
    colours = palette(rng, int(rng.integers(3, 6)))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, math.pi)
    phase = (x * math.cos(theta) + y * math.sin(theta)) / rng.uniform(10, 28)
    phase += rng.uniform(2, 7) * noise(rng, shape, 2, octaves=3)
    band = np.floor(phase) % len(colours)
    rgb = colours[band.astype(int)] * (0.9 + 0.2 * noise(rng, shape, 40, octaves=2))[..., None]
    return to_image(rgb).filter(ImageFilter.GaussianBlur(0.8))


def stained_glass(rng, shape):
    from scipy.spatial import cKDTree

    h, w = shape
    count = int(rng.integers(40, 180))
    points = rng.uniform(0, 1, (count, 2)) * (h, w)
    yx = np.stack(np.mgrid[0:h, 0:w], -1).reshape(-1, 2)
    distance, nearest = cKDTree(points).query(yx, k=2)
    colours = palette(rng, 6)
    cell = colours[rng.integers(len(colours), size=count)] * rng.uniform(0.75, 1.15, (count, 1))
    rgb = cell[nearest[:, 0]].reshape(h, w, 3)
    lead = (distance[:, 1] - distance[:, 0]).reshape(h, w) < rng.uniform(1.5, 3.5)
    rgb[lead] = 0.08
    rgb *= (0.8 + 0.35 * noise(rng, shape, 8))[..., None]
    return to_image(rgb).filter(ImageFilter.GaussianBlur(0.7))


def swirls(rng, shape):
    colours = palette(rng, 5)
    warp = noise(rng, shape, 3)
    field = noise(rng, shape, 3)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    # domain warping: look the field up at coordinates pushed around by another noise field
    shift = (warp - 0.5) * rng.uniform(60, 140)
    wy = np.clip(y + shift * np.sin(warp * 6.28), 0, h - 1).astype(int)
    wx = np.clip(x + shift * np.cos(warp * 6.28), 0, w - 1).astype(int)
    value = field[wy, wx]
    base = colour_ramp((value * rng.uniform(2, 4)) % 1.0, colours)
    gy, gx = np.gradient(value)
    along_isolines = np.arctan2(gy, gx) + math.pi / 2
    image = draw_strokes(to_image(base), rng, along_isolines, base, 2200, (10, 26), (2, 5))
    return image.filter(ImageFilter.GaussianBlur(0.5))


def pointillism(rng, shape):
    h, w = shape
    colours = palette(rng, 5)
    base = colour_ramp(noise(rng, shape, 3), colours)
    image = Image.new("RGB", (w, h), (237, 230, 214))
    radius = rng.uniform(2, 4)
    count = int(1.6 * h * w / radius ** 2)
    x, y = rng.uniform(0, w, count), rng.uniform(0, h, count)
    # mostly the local colour, a quarter pure palette dots: optical mixing as in Seurat
    pure = rng.random(count) < 0.25
    colour = np.where(pure[:, None], colours[rng.integers(len(colours), size=count)], base[y.astype(int), x.astype(int)])
    fills = _fills(colour + rng.normal(0, 0.05, (count, 3)))
    r = radius * rng.uniform(0.7, 1.3, count)
    draw = ImageDraw.Draw(image)
    for i in range(count):
        draw.ellipse([x[i] - r[i], y[i] - r[i], x[i] + r[i], y[i] + r[i]], fill=fills[i])
    return image


def cubist(rng, shape):
    h, w = shape
    colours = palette(rng, 6)
    image = Image.new("RGB", (w, h), tuple(int(c * 255) for c in colours[0]))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(25, 60))):
        cx, cy, size = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(30, 150)
        corners = int(rng.integers(3, 6))
        angles = np.sort(rng.uniform(0, 2 * math.pi, corners))
        polygon = [(cx + size * math.cos(a) * rng.uniform(0.4, 1), cy + size * math.sin(a) * rng.uniform(0.4, 1))
                   for a in angles]
        colour = colours[rng.integers(len(colours))] * rng.uniform(0.7, 1.1)
        draw.polygon(polygon, fill=tuple(int(c * 255) for c in np.clip(colour, 0, 1)),
                     outline=(30, 25, 20), width=int(rng.integers(1, 4)))
    shade = 0.8 + 0.35 * noise(rng, shape, 4)
    return to_image(np.asarray(image, np.float32) / 255 * shade[..., None]).filter(ImageFilter.GaussianBlur(0.6))


def drip_painting(rng, shape):
    h, w = shape
    colours = palette(rng, 5)
    image = Image.new("RGB", (w, h), tuple(int(c * 255) for c in colours[0] * 0.3 + 0.65))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(60, 120))):
        colour = tuple(int(c * 255) for c in colours[1 + rng.integers(len(colours) - 1)])
        steps = rng.normal(0, rng.uniform(6, 14), (int(rng.integers(10, 40)), 2)).cumsum(0)
        start = rng.uniform(0, 1, 2) * (w, h)
        draw.line([tuple(p) for p in start + steps], fill=colour, width=int(rng.integers(1, 5)), joint="curve")
        for _ in range(int(rng.integers(0, 8))):  # splatter
            x, y = start + steps[rng.integers(len(steps))] + rng.normal(0, 12, 2)
            r = rng.exponential(2.0)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return image


def watercolour(rng, shape):
    h, w = shape
    colours = palette(rng, 5)
    paper = np.full((h, w, 3), 0.96, np.float32)
    for colour in colours[rng.permutation(len(colours))[: int(rng.integers(3, 6))]]:
        blob = noise(rng, shape, int(rng.integers(2, 5)))
        mask = np.clip((blob - rng.uniform(0.4, 0.6)) * 8, 0, 1)
        gy, gx = np.gradient(mask)
        pigment = 0.55 * mask + 1.5 * np.hypot(gx, gy)  # pigment collects at the edges of a wash
        pigment *= 0.8 + 0.4 * noise(rng, shape, 30, octaves=2)
        paper *= 1 - np.clip(pigment, 0, 1)[..., None] * (1 - colour)  # glazes multiply
    return to_image(paper).filter(ImageFilter.GaussianBlur(0.8))


STYLES = (brush_strokes, colour_fields, wavy_stripes, stained_glass, swirls, pointillism, cubist, drip_painting,
          watercolour)


def style_images(count: int = 54, seed: int = 1) -> list[tuple[str, Image.Image]]:
    """``count`` textures cycling through ``STYLES``, each from its own child seed."""
    images = []
    for index, child in enumerate(np.random.SeedSequence(seed).spawn(count)):
        rng = np.random.default_rng(child)
        make = STYLES[index % len(STYLES)]
        width, height = STYLE_SIZES[index % len(STYLE_SIZES)]
        image = canvas_texture(make(rng, (height, width)), rng)
        images.append((f"{make.__name__}-{index:02d}", image))
    return images


# ----------------------------------------------------------------------------- the set

def sample_patterns(out_dir: str | Path) -> tuple[str, str]:
    """Brace patterns of the sample set's content and style shards in ``out_dir``."""
    return shard_pattern(out_dir, "content", SHARDS), shard_pattern(out_dir, "style", SHARDS)


def sample_set_exists(out_dir: str | Path) -> bool:
    import json

    for prefix in ("content", "style"):
        path = manifest_path(out_dir, prefix)
        if not path.exists():
            return False
        manifest = json.loads(path.read_text())
        if not manifest.get("complete") or not all((Path(out_dir) / s["name"]).exists() for s in manifest["shards"]):
            return False
    return True


def build_sample_set(out_dir: str | Path = "data/sample", progress: bool = False) -> tuple[str, str]:
    """Write the sample set's shards (``SHARDS`` content and ``SHARDS`` style shards) to ``out_dir``
    unless they are there; returns (content_pattern, style_pattern)."""
    out_dir = Path(out_dir)
    if not sample_set_exists(out_dir):
        staging = out_dir / ".images"
        shutil.rmtree(staging, ignore_errors=True)
        for prefix, images in (("content", content_images()), ("style", style_images())):
            folder = staging / prefix
            folder.mkdir(parents=True)
            for name, image in images:
                image.save(folder / f"{name}.png", compress_level=1)
            make_shards([folder], out_dir, prefix=prefix, size=512, shard_count=math.ceil(len(images) / SHARDS),
                        workers=0, on_mismatch="rebuild", progress=progress)
        shutil.rmtree(staging)
    # one loose photo and painting, so the quick start can call infer.py on something
    previews = (("preview_content.jpg", content_images), ("preview_style.jpg", style_images))
    for name, images in previews:
        if not (out_dir / name).exists():
            images()[0][1].convert("RGB").save(out_dir / name, quality=95)
    return sample_patterns(out_dir)
