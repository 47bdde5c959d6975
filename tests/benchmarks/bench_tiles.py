"""Benchmark: stylising a 4096 x 4096 photo, tiled against one pass (issue target: < 6 GB peak, a
progress bar, no visible tile borders).

Each run is ``python infer.py ... max_size=null`` in its own process (peak RSS of that process from
GNU time's ``%M``, wall time around it); the photo is a held-back photo upscaled to 4096 px. Untiled runs
of the inverse network are skipped (its exact swap over 1M positions takes far longer than the rest).
Writes a crop around a tile border of each tiled output next to the outputs, for the docs.

    python tests/benchmarks/bench_tiles.py [--size 4096] [--tile 1024] [--threads 2] [--out eval/tiles]
                                           [--models variational inverse]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "../shared/images/content/jcj-neural-style__tubingen.jpg"
PAINTING = ROOT / "docs/examples/painting.jpg"


def run(args: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (GB) of one infer.py process."""
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "peak_kb=%M", sys.executable, str(ROOT / "infer.py"), *args],
                            check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_kb = int(result.stderr.rsplit("peak_kb=", 1)[1].split()[0])
    return time.perf_counter() - start, peak_kb / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--style-size", type=int, default=512, help="longer side of the painting")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "tiles")
    parser.add_argument("--models", nargs="+", default=["variational", "inverse"], choices=["variational", "inverse"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    photo = args.out / f"photo_{args.size}.jpg"
    Image.open(PHOTO).convert("RGB").resize((args.size, args.size), Image.Resampling.BICUBIC).save(photo, quality=95)
    common = [f"content={photo}", f"style={PAINTING}", "max_size=null", f"threads={args.threads}",
              f"style_size={args.style_size}"]
    runs = (("variational", "null"), ("variational", str(args.tile)), ("inverse", str(args.tile)))
    for model, tile in (run for run in runs if run[0] in args.models):
        output = args.out / f"{model}_tile{tile}.png"
        seconds, peak = run([*common, f"ckpt={model}", f"tile={tile}", f"output={output}"])
        print(f"{model:12s} tile={tile:5s} {args.size}x{args.size}: {seconds:6.1f} s, peak RSS {peak:.2f} GB")
        if tile != "null":
            border = args.tile - 128  # the first tile border (tile_overlap 128): the blend spans it
            with Image.open(output) as image:
                image.crop((border - 256, border - 256, border + 384, border + 384)).save(
                    args.out / f"{model}_border_crop.png")


if __name__ == "__main__":
    main()
