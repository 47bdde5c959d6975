"""Benchmark: the data pipeline on real photos and paintings (../shared/images, ~190 files).

1. Shard building: time of make_shards for the content and style folders (size 512, all CPUs).
2. Loader throughput: images/s of (content, style) batches of 8 at 256 px (two images per pair)
   with 0 and 2 DataLoader workers; the median of ``--repeats`` fresh loaders, each timed over
   ``--batches`` batches after its first (the first batch -- worker start and shuffle-buffer fill --
   is reported apart).
3. What the loader must feed: a forward+backward pass of VGG-19 up to relu4_2 (random weights, as
   cost is the same) on a batch of 8 at 256 px, the least a training step does per batch of
   content images (the real step also encodes the style batch and runs a decoder). Reported as
   images/s consumed, i.e. 16 images (8 pairs) per step; ratio = loader / step demand.

    python tests/benchmarks/bench_data.py [--images ../shared/images] [--repeats 3] [--batches 12]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from nststyle.data import PairBatches, expand_shards
from nststyle.shards import make_shards, shard_pattern

BATCH, SIZE = 8, 256


def build(images: Path, out: Path) -> tuple[list[str], list[str], float]:
    start = time.perf_counter()
    urls = []
    for kind in ("content", "style"):
        manifest = make_shards([images / kind], out, prefix=kind, size=512, shard_count=16, workers=None,
                               progress=False)
        print(f"  {kind}: {manifest['samples']} images in {len(manifest['shards'])} shards, "
              f"{sum(s['bytes'] for s in manifest['shards']) / 1e6:.1f} MB, skipped {len(manifest['skipped'])}: "
              + "; ".join(f"{Path(s['path']).name}: {s['reason']}" for s in manifest["skipped"]))
        urls.append(expand_shards(shard_pattern(out, kind, len(manifest["shards"]))))
    return urls[0], urls[1], time.perf_counter() - start


def loader_rate(content: list[str], style: list[str], workers: int, batches: int) -> tuple[float, float]:
    """(images/s after the first batch, seconds to the first batch) of one fresh loader."""
    start = time.perf_counter()
    loader = DataLoader(PairBatches(content, style, SIZE, BATCH), batch_size=None, num_workers=workers)
    stream = iter(loader)
    next(stream)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        content_batch, style_batch = next(stream)
    elapsed = time.perf_counter() - start
    del stream
    return batches * (len(content_batch) + len(style_batch)) / elapsed, first


def step_rate(repeats: int) -> float:
    """Images/s a training step consumes (8 pairs per step), from VGG-19 to relu4_2 forward+backward."""
    try:
        from nststyle.features import CONTENT_LAYER, VGGEncoder

        encoder = VGGEncoder(layers=[CONTENT_LAYER], weights="random")
        encode = lambda x: encoder(x)[CONTENT_LAYER]  # noqa: E731
    except ImportError:  # before nststyle.features existed
        import torchvision

        encode = torchvision.models.vgg19(weights=None).features[:23].eval()
    images = torch.rand(BATCH, 3, SIZE, SIZE)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        x = images.clone().requires_grad_(True)
        start = time.perf_counter()
        encode(x).square().mean().backward()
        times.append(time.perf_counter() - start)
    return 2 * BATCH / statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=Path(__file__).resolve().parents[2] / "../shared/images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=12)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        files = sum(1 for kind in ("content", "style") for p in (args.images / kind).iterdir() if p.is_file())
        print(f"building shards from {files} files of {args.images} (target < 60 s)")
        content, style, seconds = build(args.images, Path(tmp))
        print(f"  build time: {seconds:.1f} s ({files / seconds:.1f} files/s)")

        demand = step_rate(args.repeats)
        print(f"\nloader at {SIZE} px, batches of {BATCH} pairs (images/s counts content and style images)")
        print(f"{'workers':>8} {'images/s':>9} {'min..max':>13} {'first batch':>12} {'vs step demand':>15}")
        for workers in (0, 2):
            runs = [loader_rate(content, style, workers, args.batches) for _ in range(args.repeats)]
            rates = [r for r, _ in runs]
            rate = statistics.median(rates)
            print(f"{workers:>8} {rate:>9.1f} {min(rates):>6.1f}..{max(rates):<6.1f} "
                  f"{statistics.median(f for _, f in runs):>10.2f} s {rate / demand:>14.2f}x")
        print(f"\ntraining step demand: VGG-19 to relu4_2 forward+backward, batch {BATCH} at {SIZE} px: "
              f"{demand:.1f} images/s ({demand / (2 * BATCH):.2f} steps/s; median of {args.repeats})")


if __name__ == "__main__":
    main()
