"""Benchmark: time per L-BFGS iteration of nststyle's optimisation path against ``pastiche`` (the
Gatys et al. implementation on PyPI) on the same photo and painting at 512 px, both with the Gram
loss on relu1_1..relu5_1 + relu4_2 content, max pooling, Caffe VGG-19 weights and one function
evaluation per iteration (pastiche's ``draw()``).

The two alternate iteration by iteration in one process, so that load from other work on the
machine hits both alike: ours runs one ``stylize_by_optimization`` call whose callback performs one
pastiche ``draw()`` after each of our iterations. Our times are ``History.step_seconds`` (one
L-BFGS step: closure + update, without the one-off encoding of the targets), pastiche's are the
wall-clock of each ``draw()``. Reported: median seconds per iteration and the ratio.

    python tests/benchmarks/bench_optimize.py [--size 512] [--iterations 20]
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

PHOTO = Path(__file__).resolve().parents[2] / "../shared/images/content" / "jcj-neural-style__tubingen.jpg"
PAINTING = Path(__file__).resolve().parents[2] / "../shared/images/style" / "jcj-neural-style__starry_night.jpg"


def pastiche_artist(size: int):
    from pastiche.pastiche import PasticheArtist
    return PasticheArtist(str(PHOTO), [str(PAINTING)], size=size, device="cpu", optimizer="lbfgs", pooling="max")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    content, style = load_image(PHOTO, args.size), load_image(PAINTING, args.size)
    encoder = VGGEncoder(STYLE_LAYERS + (CONTENT_LAYER,), weights="caffe")
    artist = pastiche_artist(args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; content {tuple(content.shape)} "
          f"(pastiche {tuple(artist.pastiche.shape)}), {args.iterations} iterations each, alternating", flush=True)
    theirs = []

    def draw_pastiche(iteration, image, values):
        start = time.perf_counter()
        artist.draw()
        theirs.append(time.perf_counter() - start)

    stylize_by_optimization(content, style, loss="gram", max_iter=1, encoder=encoder, progress=False)  # warm-up
    artist.draw()
    _, history = stylize_by_optimization(content, style, loss="gram", max_iter=args.iterations, rel_tol=0,
                                         encoder=encoder, progress=False, callback=draw_pastiche)
    ours = history.step_seconds
    print("ours     " + " ".join(f"{t:.2f}" for t in ours))
    print("pastiche " + " ".join(f"{t:.2f}" for t in theirs))
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    print(f"median over {len(ours)} iterations each: ours {ours_median:.2f} s/it, pastiche {theirs_median:.2f} s/it, "
          f"ratio ours/pastiche {ours_median / theirs_median:.2f} ({'no slower' if ours_median <= theirs_median else 'SLOWER'})")


if __name__ == "__main__":
    main()
