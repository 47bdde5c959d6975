"""Probe: how far the shipped variational decoder gets with better style codes than its encoder gives.

For every held-back pair, optimise the mapped code ``w`` (the input of every AdaIN layer) of the
photo at ``--work-size`` with Adam on the evaluation's own distances (style + ``--content-weight`` x
content, ``nststyle.metrics``), starting from the encoder's code, then decode the photo at 384 px and
score it beside the unrefined output. The decoder and encoders stay as shipped. It is a diagnostic
(seconds per image), not an inference mode: it says whether the gap to the Magenta model sits in the
decoder or in the codes (docs/models/variational.md).

    python tests/benchmarks/refine_codes_probe.py [--steps 20] [--lr 0.1] [--content-weight 0.02]
                                                  [--work-size 192] [--pairs 42]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from nststyle.evaluate import MULTIPLE, holdout_pairs
from nststyle.features import STYLE_LAYERS
from nststyle.images import load_image, resize_max
from nststyle.metrics import METRIC_CONTENT_LAYER, METRICS, StyleMetrics, relative_gap
from nststyle.statistics import mean_std_vector
from nststyle.stylize import load_stylizer

IMAGES = Path(__file__).resolve().parents[2] / "../shared/images"


def refined_code(net, metrics, photo, painting_statistics, w, steps, lr, content_weight):
    features = net.content_encoder(photo)
    with torch.no_grad():
        photo_content = metrics.encode(photo)[METRIC_CONTENT_LAYER]
    w = w.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        output = metrics.encoder(net.decoder.synthesize(features, w))
        style = torch.stack([relative_gap(mean_std_vector(output[name]), painting_statistics[name])
                             for name in STYLE_LAYERS]).mean()
        content = relative_gap(output[METRIC_CONTENT_LAYER].float(), photo_content).mean()
        optimizer.zero_grad()
        (style + content_weight * content).backward()
        optimizer.step()
    return w.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--content-weight", type=float, default=0.02)
    parser.add_argument("--work-size", type=int, default=192)
    parser.add_argument("--pairs", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    metrics = StyleMetrics("caffe")
    stylizer = load_stylizer("variational", "cpu")
    net = stylizer.net.requires_grad_(False)
    metrics.requires_grad_(False)
    rows, seconds = {"shipped": [], "refined": []}, []
    for pair in holdout_pairs(IMAGES)[: args.pairs]:
        photo, painting = load_image(pair.content, 384, MULTIPLE)[None], load_image(pair.style, 384)[None]
        with torch.no_grad():
            w = net.decoder.mapping(stylizer.style_code(resize_max(painting, stylizer.style_size)))
            target = {name: mean_std_vector(value) for name, value in metrics.encode(painting).items()}
        start = time.perf_counter()
        small = resize_max(photo, args.work_size, MULTIPLE)
        better = refined_code(net, metrics, small, target, w, args.steps, args.lr, args.content_weight)
        with torch.no_grad():
            refined = net.decoder.synthesize(net.content_encoder(photo), better)
        seconds.append(time.perf_counter() - start)
        rows["shipped"].append(metrics(stylizer.decode(photo, stylizer.style_code(resize_max(painting, 192))),
                                       photo, painting))
        rows["refined"].append(metrics(refined, photo, painting))
    print(f"{len(seconds)} pairs, 384 px; refinement: {args.steps} Adam steps on w at {args.work_size} px, "
          f"lr {args.lr}, content weight {args.content_weight}; median {statistics.median(seconds):.1f} s per image")
    for name, values in rows.items():
        print(f"{name:8s} " + "  ".join(f"{key} {statistics.fmean(row[key] for row in values):.3f}" for key in METRICS))


if __name__ == "__main__":
    main()
