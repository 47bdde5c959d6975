"""The losses x gamma figure (cf. Li et al. 2017, Figure 2): stylise one photo with one painting by
optimisation for every style loss of the zoo at a few balances gamma, and lay the results out as a
labelled grid (rows: losses, columns: gamma) in docs/figures/loss_grid.jpg.

CPU, one thread (other work can go on), Caffe VGG-19, L-BFGS with the paper's stopping rule
(relative change < 0.5 %) capped at --max-iter. Each cell is cached in --work-dir, so an interrupted
run resumes. Source images are never written into the grid, only results.

    python tests/benchmarks/make_loss_grid.py [--size 256] [--gammas 0.2 1 5] [--max-iter 60]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from nststyle.features import CONTENT_LAYER, STYLE_LAYERS, VGGEncoder
from nststyle.images import load_image, open_image, save_image
from nststyle.optimize import stylize_by_optimization

ROOT = Path(__file__).resolve().parents[2]
LOSSES = ("gram", "mmd_linear", "mmd_poly", "mmd_gaussian", "bn", "w2", "bn+mmd_poly")
PHOTO = Path(__file__).resolve().parents[2] / "../shared/images/content" / "jcj-neural-style__tubingen.jpg"
PAINTING = Path(__file__).resolve().parents[2] / "../shared/images/style" / "jcj-neural-style__starry_night.jpg"


def stylise_cells(content, style, gammas, max_iter, work_dir: Path) -> dict[tuple[str, float], Path]:
    encoder = VGGEncoder(STYLE_LAYERS + (CONTENT_LAYER,), weights="caffe")
    cells = {}
    for loss in LOSSES:
        for gamma in gammas:
            path = work_dir / f"{loss}_gamma{gamma:g}.png"
            if not path.exists():
                start = time.perf_counter()
                image, history = stylize_by_optimization(content, style, loss=loss, style_weight=gamma,
                                                         max_iter=max_iter, encoder=encoder, progress=False)
                save_image(image, path)
                print(f"{loss:12s} gamma {gamma:<5g} {history.iterations:4d} it "
                      f"{'(converged)' if history.stopped_early else '(max_iter) '} "
                      f"{time.perf_counter() - start:6.0f} s  loss {history.terms['total'][0]:.3g} -> "
                      f"{history.terms['total'][-1]:.3g}", flush=True)
            cells[loss, gamma] = path
    return cells


def labelled_grid(cells, gammas, tile_height: int) -> Image.Image:
    """Rows: losses, columns: gamma; names on the left, gamma on top (PIL's built-in font)."""
    tiles = {key: open_image(path) for key, path in cells.items()}
    first = next(iter(tiles.values()))
    tile_width = round(tile_height * first.width / first.height)
    label_width, header, pad = 96, 20, 4
    grid = Image.new("RGB", (label_width + len(gammas) * (tile_width + pad), header + len(LOSSES) * (tile_height + pad)),
                     "white")
    draw = ImageDraw.Draw(grid)
    for column, gamma in enumerate(gammas):
        draw.text((label_width + column * (tile_width + pad) + tile_width // 2 - 20, 4), f"gamma = {gamma:g}", fill="black")
    for row, loss in enumerate(LOSSES):
        top = header + row * (tile_height + pad)
        draw.text((4, top + tile_height // 2 - 6), loss, fill="black")
        for column, gamma in enumerate(gammas):
            tile = tiles[loss, gamma].resize((tile_width, tile_height), Image.LANCZOS)
            grid.paste(tile, (label_width + column * (tile_width + pad), top))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.2, 1.0, 5.0])
    parser.add_argument("--max-iter", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tile-height", type=int, default=168)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/nststyle_loss_grid"))
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "figures" / "loss_grid.jpg")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work_dir = args.work_dir / f"{args.size}px_{args.max_iter}it"
    work_dir.mkdir(parents=True, exist_ok=True)
    content, style = load_image(PHOTO, args.size), load_image(PAINTING, args.size)
    print(f"{PHOTO.name} {tuple(content.shape)} x {PAINTING.name} {tuple(style.shape)}, "
          f"{torch.get_num_threads()} thread(s), max {args.max_iter} L-BFGS iterations", flush=True)
    start = time.perf_counter()
    cells = stylise_cells(content, style, args.gammas, args.max_iter, work_dir)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(cells, args.gammas, args.tile_height).save(args.output, quality=85, optimize=True)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KB) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
