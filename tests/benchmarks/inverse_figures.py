"""Figures and measurements of the inverse-network runs (generated images only: no input is copied).

    python tests/benchmarks/inverse_figures.py --main MAIN.ckpt --ablation ABLATION.ckpt \
        --photos PHOTOS.txt --paintings PAINTINGS.txt --out docs/figures [--stages optimize,grid,...]

MAIN.ckpt was trained with swapped activations (the paper's mix), ABLATION.ckpt on natural activations
only, for the same number of steps. PHOTOS.txt / PAINTINGS.txt list held-back image files. Stages:

- ``optimize``: the same swap objective ``||Phi(I) - Phi_ss(C, S)||^2 + tv * TV(I)`` optimised per image
  (``nststyle.optimize``, L-BFGS from the content) for two pairs, cached in ``--cache``;
- ``grid``: ``inverse_grid.jpg``, row = held-back photo, column = held-back painting (list order);
- ``compare``: ``inverse_vs_optimization.jpg`` (network | optimisation, a row per pair) and the
  objective value of both;
- ``ablation``: the reconstruction error ``||Phi(Phi^-1(z)) - z||^2`` of swapped (and natural) activations
  of every held-back pair for both checkpoints, and ``inverse_ablation.jpg`` (trained with swaps |
  without swaps, a row per pair);
- ``curve``: the same errors for every step both runs checkpointed (``--main-dir``, ``--ablation-dir``),
  ``inverse_ablation_curve.jpg``;
- ``video``: stability of consecutive frames of a synthetic pan (see ``video_stability``).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nststyle.images import load_image, save_grid
from nststyle.losses import total_variation
from nststyle.optimize import stylize_by_optimization
from nststyle.stylize import InverseStylizer, load_stylizer
from nststyle.swap import style_swap

OPTIMIZE_PAIRS = ((2, 2), (0, 0))  # (photo, painting) indices into the held-back lists


def read_list(path: str) -> list[Path]:
    return [Path(line.strip()) for line in open(path) if line.strip() and not line.startswith("#")]


def objective(stylizer: InverseStylizer, image: torch.Tensor, target: torch.Tensor, tv_weight: float) -> tuple[float, float]:
    """The swap objective's two terms for an image: feature MSE to the swap target, weighted TV."""
    with torch.no_grad():
        mse = float((stylizer.encode(image) - target).pow(2).mean())
    return mse, tv_weight * float(total_variation(image))


def optimize_stage(stylizer, photos, paintings, size, tv_weight, cache: Path, max_iter: int, rel_tol: float):
    cache.mkdir(parents=True, exist_ok=True)
    for p, s in OPTIMIZE_PAIRS:
        path = cache / f"optimized_{p}_{s}_{size}.pt"
        if path.exists():
            continue
        content, style = load_image(photos[p], size, multiple=4)[None], load_image(paintings[s], size)[None]
        start = time.perf_counter()
        # the objective the network was trained for: the same encoder, layer, patches and TV weight
        image, history = stylize_by_optimization(content, style, loss="swap", tv_weight=tv_weight, max_iter=max_iter,
                                                 rel_tol=rel_tol, encoder=stylizer.encoder, progress=True)
        seconds = time.perf_counter() - start
        torch.save({"image": image, "seconds": seconds, "iterations": history.iterations}, path)
        print(f"optimised pair {photos[p].stem} x {paintings[s].stem}: {history.iterations} iterations, {seconds:.0f} s")


def grid_stage(stylizer, photos, paintings, size, out: Path):
    tiles, start = [], time.perf_counter()
    for photo in photos:
        content = load_image(photo, size, multiple=4)[None]
        tiles += [stylizer.stylize(content, load_image(painting, size)[None])[0] for painting in paintings]
    seconds = (time.perf_counter() - start) / (len(photos) * len(paintings))
    save_grid(tiles, out / "inverse_grid.jpg", nrow=len(paintings), size=128)
    print(f"grid: {len(photos)} x {len(paintings)} at {size} px, {seconds:.2f} s per image -> {out / 'inverse_grid.jpg'}")


def compare_stage(stylizer, photos, paintings, size, tv_weight, cache: Path, out: Path):
    tiles = []
    for p, s in OPTIMIZE_PAIRS:
        content, style = load_image(photos[p], size, multiple=4)[None], load_image(paintings[s], size)[None]
        target = stylizer.swap(content, style)
        start = time.perf_counter()
        network = stylizer.stylize(content, style)
        network_seconds = time.perf_counter() - start
        saved = torch.load(cache / f"optimized_{p}_{s}_{size}.pt")
        optimized = saved["image"]
        for name, image, seconds in (("network", network, network_seconds), ("optimisation", optimized, saved["seconds"])):
            mse, tv = objective(stylizer, image, target, tv_weight)
            print(f"{photos[p].stem} x {paintings[s].stem} {name:>12}: swap MSE {mse:9.1f} + TV {tv:7.1f} "
                  f"= {mse + tv:9.1f}  ({seconds:.2f} s{', %d iterations' % saved['iterations'] if name != 'network' else ''})")
        tiles += [network[0], optimized[0]]
    save_grid(tiles, out / "inverse_vs_optimization.jpg", nrow=2, size=192)
    print(f"-> {out / 'inverse_vs_optimization.jpg'} (row per pair: inverse network | optimisation)")


@torch.no_grad()
def reconstruction_errors(stylizer: InverseStylizer, photos, paintings, size) -> dict[str, list[float]]:
    """``||Phi(Phi^-1(z)) - z||^2`` (mean over elements) for the swapped activations of every held-back
    pair and for the natural activations of every held-back photo and painting, images at ``size``."""
    encode = stylizer.encode
    photo_features = [encode(load_image(path, size, multiple=4)[None]) for path in photos]
    painting_features = [encode(load_image(path, size, multiple=4)[None]) for path in paintings]

    def error(z):
        return float((encode(stylizer.net(z)) - z).pow(2).mean())

    swapped = [error(style_swap(c, s, stylizer.patch_size, stylizer.stride)) for c in photo_features
               for s in painting_features]
    return {"swapped": swapped, "photos": [error(z) for z in photo_features],
            "paintings": [error(z) for z in painting_features]}


def ablation_stage(main, ablation, photos, paintings, size, out: Path):
    print(f"reconstruction error ||Phi(Phi^-1(z)) - z||^2 on held-back data at {size} px (mean over elements; "
          f"mean and median over images / pairs):")
    for name, stylizer in (("with swaps", main), ("natural only", ablation)):
        errors = reconstruction_errors(stylizer, photos, paintings, size)
        print("  " + f"{name:>12}: " + ", ".join(
            f"{kind} {statistics.mean(values):8.1f} (median {statistics.median(values):8.1f}, n={len(values)})"
            for kind, values in errors.items()))
    tiles = []
    for p, s in ((0, 1), (3, 5), (5, 3)):
        content, style = load_image(photos[p], size, multiple=4)[None], load_image(paintings[s], size)[None]
        tiles += [main.stylize(content, style)[0], ablation.stylize(content, style)[0]]
    save_grid(tiles, out / "inverse_ablation.jpg", nrow=2, size=160)
    print(f"-> {out / 'inverse_ablation.jpg'} (row per pair: trained with swaps | natural activations only)")


@torch.no_grad()
def line_plot(series: dict[str, list[tuple[int, float]]], path: Path, ylabel: str, width=640, height=360) -> None:
    """A linear-scale line plot with PIL (no plotting library here): one coloured line per series."""
    from PIL import Image, ImageDraw
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14)]
    left, right, top, bottom = 70, 190, 20, 40
    points = [p for line in series.values() for p in line]
    x_max, y_max = max(x for x, _ in points), max(y for _, y in points) * 1.05
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(x, y):
        return left + plot_w * x / x_max, top + plot_h * (1 - y / y_max)

    for fraction in (0, 0.25, 0.5, 0.75, 1.0):
        _, y = xy(0, fraction * y_max)
        draw.line([(left, y), (left + plot_w, y)], fill=(225, 225, 225))
        draw.text((6, y - 6), f"{fraction * y_max:.3g}", fill="black")
    for x_tick in sorted({x for x, _ in points}):
        x, _ = xy(x_tick, 0)
        draw.text((x - 10, height - bottom + 6), str(x_tick), fill="black")
    draw.text((left + plot_w // 2 - 15, height - 16), "step", fill="black")
    draw.text((left + 4, top + 2), ylabel, fill="black")
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for index, (name, line) in enumerate(series.items()):
        colour = colours[index % len(colours)]
        draw.line([xy(*p) for p in line], fill=colour, width=2)
        for p in line:
            x, y = xy(*p)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        y = top + 10 + 18 * index
        draw.line([(width - right + 10, y + 6), (width - right + 30, y + 6)], fill=colour, width=3)
        draw.text((width - right + 35, y), name, fill="black")
    image.save(path, quality=90)


def curve_stage(main_dir: Path, ablation_dir: Path, photos, paintings, size, out: Path):
    """Held-back swapped-activation reconstruction error at every step both runs have a checkpoint of."""
    def by_step(directory):
        return {int(path.stem[4:]): path for path in directory.glob("step*.ckpt")}

    main_steps, ablation_steps = by_step(main_dir), by_step(ablation_dir)
    steps = sorted(main_steps.keys() & ablation_steps.keys())
    series = {"swapped, trained with swaps": [], "swapped, natural only": [],
              "photos, trained with swaps": [], "photos, natural only": []}
    print(f"held-back reconstruction error per checkpoint at {size} px (mean over pairs / photos):")
    for step in steps:
        row = []
        for run, checkpoints in (("trained with swaps", main_steps), ("natural only", ablation_steps)):
            errors = reconstruction_errors(load_stylizer(checkpoints[step], "cpu"), photos, paintings, size)
            series[f"swapped, {run}"].append((step, statistics.mean(errors["swapped"])))
            series[f"photos, {run}"].append((step, statistics.mean(errors["photos"])))
            row.append(f"{run}: swapped {statistics.mean(errors['swapped']):8.1f}, photos "
                       f"{statistics.mean(errors['photos']):8.1f}, paintings {statistics.mean(errors['paintings']):8.1f}")
        print(f"  step {step:5d}  " + " | ".join(row))
    line_plot(series, out / "inverse_ablation_curve.jpg", "||Phi(Phi^-1(z)) - z||^2, held-back")
    print(f"-> {out / 'inverse_ablation_curve.jpg'}")


def video_stability(stylizer: InverseStylizer, photo: Path, painting: Path, size: int = 192, frames: int = 8,
                    shift: int = 4) -> dict[str, float]:
    """A synthetic pan: frame t is the ``size`` crop of a larger photo at x offset ``t * shift``. For
    consecutive frames, the region both show is compared after undoing the shift:

    - ``input``: mean |difference| of the unaligned consecutive input frames (how much the frame changes),
    - ``output_unaligned``: the same for the stylised frames,
    - ``output_aligned``: stylised frame t+1 vs stylised frame t moved by the pan (0 = perfectly stable,
      the flicker a viewer sees),
    - ``decoder_aligned``: the same with alpha=0 (the decoder alone, no swap): the part of the flicker
      that comes from the decoder rather than from the swap's patch choices.
    """
    image = load_image(photo)
    scale = max((size + 8) / image.shape[-2], (size + frames * shift + 8) / image.shape[-1])
    image = F.interpolate(image[None], scale_factor=scale, mode="bilinear", antialias=True)[0].clamp(0, 1)
    style = load_image(painting, size)[None]
    top = (image.shape[-2] - size) // 2
    crops = torch.stack([image[:, top:top + size, t * shift: t * shift + size] for t in range(frames)])
    stylised = torch.cat([stylizer.stylize(crop[None], style) for crop in crops])
    decoded = torch.cat([stylizer.stylize(crop[None], style, alpha=0.0) for crop in crops])
    margin = 8  # borders see different padding context in each frame

    def aligned(seq):
        # frame t+1 at x equals frame t at x + shift
        now, later = seq[:-1, ..., shift + margin: size - margin], seq[1:, ..., margin: size - shift - margin]
        return float((now - later).abs().mean())

    def unaligned(seq):
        return float((seq[:-1] - seq[1:]).abs().mean())

    return {"input": unaligned(crops), "output_unaligned": unaligned(stylised), "output_aligned": aligned(stylised),
            "decoder_aligned": aligned(decoded), "input_aligned": aligned(crops)}


def video_stage(stylizer, photos, paintings, out: Path):
    print("synthetic pan (8 frames of 192 px, consecutive frames shifted by `shift` px), mean |difference|:")
    for shift in (4, 2, 1):
        rows = [video_stability(stylizer, photos[p], paintings[s], shift=shift) for p, s in ((2, 2), (1, 0), (5, 3))]
        mean = {key: statistics.mean(row[key] for row in rows) for key in rows[0]}
        print(f"  shift {shift} px: input {mean['input']:.4f} | output unaligned {mean['output_unaligned']:.4f} | "
              f"output aligned {mean['output_aligned']:.4f} (decoder alone {mean['decoder_aligned']:.4f}, "
              f"input {mean['input_aligned']:.4f}) | "
              f"aligned/unaligned output {mean['output_aligned'] / mean['output_unaligned']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--main", required=True)
    parser.add_argument("--ablation")
    parser.add_argument("--main-dir", help="checkpoint folder of the main run (curve stage)")
    parser.add_argument("--ablation-dir", help="checkpoint folder of the ablation run (curve stage)")
    parser.add_argument("--photos", required=True)
    parser.add_argument("--paintings", required=True)
    parser.add_argument("--out", default="docs/figures")
    parser.add_argument("--cache", default="logs/inverse_figures")
    parser.add_argument("--size", type=int, default=256, help="longer side of the grid's inputs")
    parser.add_argument("--compare-size", type=int, default=192, help="longer side for optimisation vs network")
    parser.add_argument("--eval-size", type=int, default=128, help="longer side for the reconstruction errors")
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--rel-tol", type=float, default=0.001, help="optimisation stops below this relative change")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stages", default="optimize,grid,compare,ablation,curve,video")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out, cache = Path(args.out), Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    photos, paintings = read_list(args.photos), read_list(args.paintings)
    main_stylizer = load_stylizer(args.main, "cpu")
    tv_weight = float(torch.load(args.main, map_location="cpu", weights_only=False)["hyper_parameters"]["tv_weight"])
    stages = args.stages.split(",")
    if "optimize" in stages:
        optimize_stage(main_stylizer, photos, paintings, args.compare_size, tv_weight, cache, args.max_iter, args.rel_tol)
    if "grid" in stages:
        grid_stage(main_stylizer, photos, paintings, args.size, out)
    if "compare" in stages:
        compare_stage(main_stylizer, photos, paintings, args.compare_size, tv_weight, cache, out)
    if "ablation" in stages and args.ablation:
        ablation_stage(main_stylizer, load_stylizer(args.ablation, "cpu"), photos, paintings, args.eval_size, out)
    if "curve" in stages and args.main_dir and args.ablation_dir:
        curve_stage(Path(args.main_dir), Path(args.ablation_dir), photos, paintings, args.eval_size, out)
    if "video" in stages:
        video_stage(main_stylizer, photos, paintings, out)


if __name__ == "__main__":
    main()
