"""Forward+backward time of each style loss on the five style layers of one image, and W2 against a
plain eigh-based implementation (matrix square roots of both covariances through ``eigh``, every
step differentiated) measured in the same run. VGG features are computed once, outside the timing.

    python tests/benchmarks/bench_losses.py [--size 512] [--repeats 5]
"""
import argparse
import statistics
import time

import torch

from nststyle.features import STYLE_LAYERS, VGGEncoder
from nststyle.images import load_image
from nststyle.losses import STYLE_LOSSES, style_loss
from skimage import data


def plain_sqrtm(matrix):
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag_embed(values.clamp_min(0).sqrt()) @ vectors.transpose(-1, -2)


def plain_w2(features, style_features):
    """Textbook closed form: sqrtm via eigh on both sides, recomputed each call, all in the graph."""
    total = 0.0
    for layer in STYLE_LAYERS:
        x = features[layer].flatten(2)[0].T.double()
        s = style_features[layer].flatten(2)[0].T.double()
        mx, ms = x.mean(0), s.mean(0)
        cx, cs = torch.cov(x.T), torch.cov(s.T)
        root = plain_sqrtm(cs)
        total = total + (mx - ms).square().sum() + cx.trace() + cs.trace() - 2 * plain_sqrtm(root @ cx @ root).trace()
    return total


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--style", default=None, help="a painting (default: skimage's coffee photo)")
    args = parser.parse_args()
    torch.manual_seed(0)
    encoder = VGGEncoder(STYLE_LAYERS, weights="caffe")
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255)[None]
    photo = torch.nn.functional.interpolate(photo, size=(args.size, args.size), mode="bilinear", antialias=True)
    style = (load_image(args.style, args.size) if args.style else
             torch.from_numpy(data.coffee()).permute(2, 0, 1).float().div(255))[None]
    with torch.no_grad():
        style_features = encoder(style)
        photo_features = encoder(photo)
    print(f"{args.size}px image, layers {', '.join(STYLE_LAYERS)}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats}")

    def step(loss):
        features = {k: v.clone().requires_grad_() for k, v in photo_features.items()}
        value = loss(features)
        value.backward()
        return value

    print(f"{'loss':14s} {'fwd+bwd (s)':>12s}")
    results = {}
    for kind in list(STYLE_LOSSES) + ["bn+mmd_poly"]:
        loss = style_loss(kind).set_target(style_features)
        step(loss)  # warm-up
        results[kind], _ = timed(lambda: step(loss), args.repeats)
        print(f"{kind:14s} {results[kind]:12.4f}")

    w2 = style_loss("w2", scale=1.0).set_target(style_features)
    ours = w2(photo_features).item()
    reference = plain_w2(photo_features, style_features).item()

    def plain_step():
        features = {k: v.clone().requires_grad_() for k, v in photo_features.items()}
        plain_w2(features, style_features).backward()

    plain_time, _ = timed(plain_step, args.repeats)
    print(f"\nW2 (ours, cached target, eigvalsh)  {results['w2']:.4f} s")
    print(f"W2 (plain eigh/sqrtm both sides)    {plain_time:.4f} s   ratio plain/ours = {plain_time / results['w2']:.2f}x")
    print(f"W2 values: ours {ours:.6g}, plain {reference:.6g} (relative difference {abs(ours - reference) / abs(reference):.1e})")


if __name__ == "__main__":
    main()
