"""Figures of a variational training run (outputs only: no input image is copied).

    python tests/benchmarks/variational_figures.py --run RUN_DIR --photos PHOTOS.txt --paintings PAINTINGS.txt \
        --out docs/figures [--size 256]

RUN_DIR is a train.py run folder (checkpoints/last.ckpt, csv/version_0/metrics.csv). PHOTOS.txt and
PAINTINGS.txt list held-back image files (one per line). Writes
- ``variational_loss.jpg``: training loss terms (moving average) and validation loss per step, log scale;
- ``variational_holdout_grid.jpg``: row = photo, column = painting, each tile the stylised photo;
- ``variational_prior_samples.jpg``: per photo, styles drawn from the prior N(0, T^2 I);
- ``variational_interpolation.jpg``: one photo, slerp between the codes of two paintings;
and prints the final losses, the inference time per image and the held-back *style gain*: the style loss
(``--gain-loss``, Gram by default) of each tile against its own painting, versus against the other paintings' tiles of the same photo
(``other / own``; 1.0 means the style code changes nothing).
"""
from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from nststyle.features import VGGEncoder
from nststyle.images import load_image, save_grid
from nststyle.lit.variational import PAPER_STYLE_LAYERS
from nststyle.losses import style_loss
from nststyle.stylize import load_stylizer

COLOURS = {"train/loss": (0, 0, 0), "train/content": (31, 119, 180), "train/style": (214, 39, 40),
           "train/kl_weighted": (44, 160, 44), "val/loss": (255, 127, 14)}


def read_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path) as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key.startswith(("train/", "val/")) and value and math.isfinite(float(value)):
                    series.setdefault(key, []).append((int(row["step"]), float(value)))
    if "train/kl" in series and "train/kl_weight" in series:
        weights = dict(series["train/kl_weight"])
        series["train/kl_weighted"] = [(s, v * weights.get(s, 0.0)) for s, v in series["train/kl"] if weights.get(s)]
    return series


def moving_average(points, window: int):
    out = []
    for i in range(len(points)):
        chunk = points[max(0, i - window + 1): i + 1]
        out.append((points[i][0], sum(v for _, v in chunk) / len(chunk)))
    return out


def plot(series: dict, path: Path, width: int = 720, height: int = 400, window: int = 10) -> None:
    """A log-scale line plot with PIL (no plotting library needed)."""
    margin_left, margin_right, margin_top, margin_bottom = 70, 170, 20, 40
    lines = {k: (moving_average(v, window) if k.startswith("train/") else v)
             for k, v in series.items() if k in COLOURS and v}
    values = [v for points in lines.values() for _, v in points if v > 0]
    steps = [s for points in lines.values() for s, _ in points]
    lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    s_max = max(steps) or 1
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    plot_w, plot_h = width - margin_left - margin_right, height - margin_top - margin_bottom

    def xy(step, value):
        x = margin_left + plot_w * step / s_max
        y = margin_top + plot_h * (1 - (math.log10(max(value, 10 ** lo)) - lo) / max(hi - lo, 1))
        return x, y

    for decade in range(lo, hi + 1):
        _, y = xy(0, 10 ** decade)
        draw.line([(margin_left, y), (margin_left + plot_w, y)], fill=(225, 225, 225))
        draw.text((8, y - 6), f"1e{decade}", fill="black")
    magnitude = 10 ** max(0, len(str(s_max // 5)) - 1)
    for tick in range(0, s_max + 1, max(1, (s_max // 5) // magnitude * magnitude)):
        x, _ = xy(tick, 10 ** lo)
        draw.text((x - 10, height - margin_bottom + 8), str(tick), fill="black")
    draw.text((margin_left + plot_w // 2 - 15, height - 18), "step", fill="black")
    draw.rectangle([margin_left, margin_top, margin_left + plot_w, margin_top + plot_h], outline="black")
    for index, (name, points) in enumerate(lines.items()):
        colour = COLOURS[name]
        if len(points) > 1:
            draw.line([xy(s, v) for s, v in points], fill=colour, width=2)
        else:
            x, y = xy(*points[0])
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        label = name + (f" (avg {window})" if name.startswith("train/") else "")
        y = margin_top + 10 + 18 * index
        draw.line([(width - margin_right + 10, y + 6), (width - margin_right + 30, y + 6)], fill=colour, width=3)
        draw.text((width - margin_right + 35, y), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90)


@torch.no_grad()
def style_gain(tiles: list[torch.Tensor], paintings: list[torch.Tensor], kind: str = "gram") -> tuple[float, float]:
    """Mean style loss (``kind``) of tiles against their own painting and against the other paintings
    (tiles are row-major: photo x painting)."""
    vgg, loss = VGGEncoder(tuple(PAPER_STYLE_LAYERS)), style_loss(kind, PAPER_STYLE_LAYERS)
    features = [vgg(tile[None]) for tile in tiles]
    own, other, count = 0.0, 0.0, len(paintings)
    for j, painting in enumerate(paintings):
        loss.set_target(vgg(painting))
        for i in range(len(tiles) // count):
            for k in range(count):
                value = loss(features[i * count + k]).item()
                own, other = (own + value, other) if k == j else (own, other + value)
    pairs = len(tiles)
    return own / pairs, other / (pairs * (count - 1))


def read_list(path: str) -> list[Path]:
    return [Path(line.strip()) for line in Path(path).read_text().splitlines() if line.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--ckpt", type=Path, default=None, help="checkpoint (default: RUN/checkpoints/last.ckpt)")
    parser.add_argument("--photos", required=True)
    parser.add_argument("--paintings", required=True)
    parser.add_argument("--out", default="docs/figures", type=Path)
    parser.add_argument("--curve-run", type=Path, default=None, help="take the loss curve from another run folder")
    parser.add_argument("--size", type=int, default=256, help="longer side of photos and paintings at inference")
    parser.add_argument("--tile", type=int, default=128, help="tile height in the figures")
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--pair", default="0,1", help="indices of the two paintings to interpolate between")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="prior samples z ~ N(0, T^2 I); a short run's posterior means sit well inside the prior")
    parser.add_argument("--gain-loss", default="gram", help="style loss kind of the style gain (gram, w2, bn, ...)")
    args = parser.parse_args()

    series = read_metrics((args.curve_run or args.run) / "csv" / "version_0" / "metrics.csv")
    plot(series, args.out / "variational_loss.jpg")
    for name in ("train/loss", "train/content", "train/style", "train/kl", "val/loss", "val/content", "val/style"):
        if series.get(name):
            first, last = series[name][0], series[name][-1]
            tail = [v for _, v in series[name][-10:]]
            print(f"{name:14s} step {first[0]:5d}: {first[1]:.4g}  ->  step {last[0]:5d}: {last[1]:.4g} "
                  f"(mean of last {len(tail)} logged: {sum(tail) / len(tail):.4g})")

    stylizer = load_stylizer(args.ckpt or args.run / "checkpoints" / "last.ckpt", "cpu")
    photos = [load_image(p, max_size=args.size, multiple=stylizer.multiple)[None] for p in read_list(args.photos)]
    paintings = [load_image(p, max_size=args.size)[None] for p in read_list(args.paintings)]

    start, tiles = time.perf_counter(), []
    for photo in photos:
        tiles += [stylizer.stylize(photo, painting)[0] for painting in paintings]
    per_image = (time.perf_counter() - start) / len(tiles)
    save_grid(tiles, args.out / "variational_holdout_grid.jpg", nrow=len(paintings), size=args.tile)

    samples = [tile[0] for photo in photos[:3]
               for tile in stylizer.sample(photo, args.samples, seed=0, temperature=args.temperature)]
    save_grid(samples, args.out / "variational_prior_samples.jpg", nrow=args.samples, size=args.tile)

    first, second = (int(index) for index in args.pair.split(","))
    strip = stylizer.interpolate(photos[0], paintings[first], paintings[second], args.steps, "slerp")
    save_grid([image[0] for image in strip], args.out / "variational_interpolation.jpg", nrow=args.steps,
              size=args.tile)
    own, other = style_gain(tiles, paintings, args.gain_loss)
    print(f"held-back style loss ({args.gain_loss}): own painting {own:.4g}, other paintings {other:.4g}: "
          f"style gain {other / own:.3f}")
    codes = torch.cat([stylizer.style_code(p) for p in paintings])
    print(f"{len(tiles)} held-back pairs at {args.size} px: {per_image:.2f} s per image "
          f"({torch.get_num_threads()} threads); style-code norms of the paintings: "
          f"{', '.join(f'{n:.2f}' for n in codes.norm(dim=1).tolist())} (prior: ~{math.sqrt(codes.shape[1]):.1f})")
    for path in sorted(args.out.glob("variational_*.jpg")):
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
