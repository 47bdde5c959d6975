"""Checkpoint by checkpoint, the two numbers that the loss curve of a variational run hides.

    python tests/benchmarks/variational_checkpoints.py --run RUN_DIR --photos PHOTOS.txt --paintings PAINTINGS.txt \
        [--every 100] [--first STEP] [--size 128]

For every checkpoint ``RUN_DIR/checkpoints/step*.ckpt`` (one in ``--every`` steps), it stylises the held-back
photos x paintings and prints:
- the held-back *style gain* of ``variational_figures.py``. It is the style loss (``--gain-loss``) against
  the other paintings divided by the loss against the tile's own painting. 1.0 means the style code changes
  nothing.
- the *out-of-palette share*: the fraction of output pixels whose colour is farther than ``--palette-distance``
  (RGB, 0-1 scale) from every colour of both the photo and the painting. Blobs of a colour that neither input
  has, such as the saturated red spots of docs/models/variational.md, show up here. Plain stylisation stays near 0.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from nststyle.images import load_image
from nststyle.stylize import load_stylizer
from variational_figures import read_list, style_gain


def palette(image: torch.Tensor, count: int = 4096, seed: int = 0) -> torch.Tensor:
    """Up to ``count`` random pixel colours of a ``1x3xHxW`` image as ``Nx3``."""
    pixels = image[0].flatten(1).T
    generator = torch.Generator().manual_seed(seed)
    return pixels[torch.randperm(len(pixels), generator=generator)[:count]]


def out_of_palette_share(output: torch.Tensor, photo: torch.Tensor, painting: torch.Tensor,
                         distance: float) -> float:
    colours = torch.cat([palette(photo), palette(painting)])
    nearest = torch.cdist(palette(output, count=8192, seed=1), colours).amin(dim=1)
    return (nearest > distance).float().mean().item()


def step_of(path: Path) -> int:
    return int(re.search(r"step(\d+)", path.name).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--photos", required=True)
    parser.add_argument("--paintings", required=True)
    parser.add_argument("--every", type=int, default=100, help="keep checkpoints whose step is a multiple of this")
    parser.add_argument("--first", type=int, default=0, help="skip checkpoints before this step")
    parser.add_argument("--size", type=int, default=128, help="longer side of photos and paintings")
    parser.add_argument("--gain-loss", default="gram", help="style loss kind of the style gain (gram, w2, bn, ...)")
    parser.add_argument("--palette-distance", type=float, default=0.25)
    args = parser.parse_args()

    checkpoints = sorted((path for path in (args.run / "checkpoints").glob("step*.ckpt")
                          if step_of(path) % args.every == 0 and step_of(path) >= args.first), key=step_of)
    if not checkpoints:
        parser.error(f"no step*.ckpt with a step that is a multiple of {args.every} in {args.run / 'checkpoints'}")
    photo_files, painting_files = read_list(args.photos), read_list(args.paintings)
    paintings = [load_image(p, max_size=args.size)[None] for p in painting_files]
    print(f"{len(photo_files)} photos x {len(paintings)} paintings at {args.size} px")
    print(f"{'step':>6} {'style gain':>10} {'out-of-palette':>15}   (gain of the {args.gain_loss} loss)")
    for path in checkpoints:
        stylizer = load_stylizer(path, "cpu")
        tiles, shares = [], []
        for photo_file in photo_files:
            photo = load_image(photo_file, max_size=args.size, multiple=stylizer.multiple)[None]
            for painting in paintings:
                tile = stylizer.stylize(photo, painting)
                tiles.append(tile[0])
                shares.append(out_of_palette_share(tile, photo, painting, args.palette_distance))
        own, other = style_gain(tiles, paintings, args.gain_loss)
        print(f"{step_of(path):6d} {other / own:10.3f} {sum(shares) / len(shares):15.4f}", flush=True)


if __name__ == "__main__":
    main()
