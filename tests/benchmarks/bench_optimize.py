"""Benchmark: time per L-BFGS iteration of nststyle's optimisation path against ``pastiche`` (the
Gatys et al. implementation on PyPI) on the same photo and painting at 512 px, both with the Gram
loss on relu1_1..relu5_1 + relu4_2 content, max pooling, Caffe VGG-19 weights and one function
evaluation per iteration (pastiche's ``draw()``).

Runs alternate in rounds (ours, pastiche, ours, ...) in one process so that load from other work on
the machine hits both alike; each round of ours is a fresh ``stylize_by_optimization`` call whose
per-iteration times (``History.step_seconds``) exclude the one-off encoding of the targets, and
pastiche's artist is built once and timed per ``draw()``. Reported: median seconds per iteration.

    python tests/benchmarks/bench_optimize.py [--size 512] [--rounds 4] [--iterations 5]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from nststyle.features import CONTENT_LAYER, STYLE_LAYERS, VGGEncoder
from nststyle.images import load_image
from nststyle.optimize import stylize_by_optimization

PHOTO = Path("/work/shared/images/content/jcj-neural-style__tubingen.jpg")
PAINTING = Path("/work/shared/images/style/jcj-neural-style__starry_night.jpg")


def pastiche_artist(size: int):
    from pastiche.pastiche import PasticheArtist
    return PasticheArtist(str(PHOTO), [str(PAINTING)], size=size, device="cpu", optimizer="lbfgs", pooling="max")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=5, help="iterations per round and method")
    args = parser.parse_args()
    content, style = load_image(PHOTO, args.size), load_image(PAINTING, args.size)
    encoder = VGGEncoder(STYLE_LAYERS + (CONTENT_LAYER,), weights="caffe")
    artist = pastiche_artist(args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; content {tuple(content.shape)} "
          f"(pastiche {tuple(artist.pastiche.shape)}), {args.rounds} rounds x {args.iterations} iterations each",
          flush=True)
    ours, theirs = [], []
    artist.draw()  # warm-up (first calls allocate)
    stylize_by_optimization(content, style, loss="gram", max_iter=1, encoder=encoder, progress=False)
    for round_ in range(args.rounds):
        _, history = stylize_by_optimization(content, style, loss="gram", max_iter=args.iterations, rel_tol=0,
                                             encoder=encoder, progress=False)
        ours += history.step_seconds
        for _ in range(args.iterations):
            start = time.perf_counter()
            artist.draw()
            theirs.append(time.perf_counter() - start)
        print(f"round {round_ + 1}: ours {statistics.median(history.step_seconds):.2f} s/it, "
              f"pastiche {statistics.median(theirs[-args.iterations:]):.2f} s/it", flush=True)
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    print(f"median over {len(ours)} iterations each: ours {ours_median:.2f} s/it, pastiche {theirs_median:.2f} s/it, "
          f"ratio ours/pastiche {ours_median / theirs_median:.2f} ({'no slower' if ours_median <= theirs_median else 'SLOWER'})")


if __name__ == "__main__":
    main()
