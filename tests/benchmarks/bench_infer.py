"""Feed-forward inference time at 512 px on this machine: nststyle's models next to a plain PyTorch
AdaIN (Huang & Belongie: VGG-19 to relu4_1 -> AdaIN -> the mirrored decoder of pytorch-AdaIN),
all measured in the same run with random weights (timing does not depend on them).

    python tests/benchmarks/bench_infer.py [--size 512] [--repeats 5] [--threads N] [--bf16]

Prints the median wall time of ``repeats`` runs after one warm-up, per model, and its ratio to the
AdaIN reference. "full" = encode the style image + stylise the content; "cached style" = the style
code/statistics computed once beforehand (the video / many-photos case). To add a model, append a
``Candidate`` in ``candidates()``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
from torch import nn

from nststyle.features import VGGEncoder
from nststyle.models.inverse import InverseNet
from nststyle.models.variational import VariationalStyleNet
from nststyle.statistics import mean_std
from nststyle.swap import style_swap


def adain_decoder() -> nn.Sequential:
    """The decoder of pytorch-AdaIN (naoto0804), relu4_1 (512 ch) -> RGB."""
    def conv(c_in, c_out, relu=True):
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3)]
        return layers + [nn.ReLU()] if relu else layers
    up = nn.Upsample(scale_factor=2, mode="nearest")
    return nn.Sequential(*conv(512, 256), up, *conv(256, 256), *conv(256, 256), *conv(256, 256), *conv(256, 128),
                         up, *conv(128, 128), *conv(128, 64), up, *conv(64, 64), *conv(64, 3, relu=False))


def adain(content_features, style_features, eps=1e-5):
    """Huang & Belongie's AdaIN: the content features with the style's channel means and stds."""
    content_mean, content_std = mean_std(content_features, eps)
    style_mean, style_std = mean_std(style_features, eps)
    return (content_features - content_mean) / content_std * style_std + style_mean


class PlainAdaIN(nn.Module):
    """VGG-19 up to relu4_1 (torchvision layout, layers 0..20) + AdaIN + decoder."""

    def __init__(self):
        super().__init__()
        self.encoder = torchvision.models.vgg19(weights=None).features[:21]
        self.decoder = adain_decoder()

    def style_stats(self, style):
        return self.encoder(style)

    def decode(self, content, style_features):
        return self.decoder(adain(self.encoder(content), style_features))

    def forward(self, content, style):
        return self.decode(content, self.style_stats(style))


@dataclass
class Candidate:
    name: str
    full: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    cached: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (content, style) -> image
    parameters: int = 0


def variational(name: str, **config) -> Candidate:
    net = VariationalStyleNet(**config).eval()
    codes = {}

    def cached(content, style):
        key = id(style)
        if key not in codes:
            codes[key] = net.encode_style(style)[0]
        return net.decode(content, codes[key])

    return Candidate(name, lambda c, s: net(c, s)[0], cached, sum(p.numel() for p in net.parameters()))


def candidates() -> list[Candidate]:
    reference = PlainAdaIN().eval()
    stats = {}

    def adain_cached(content, style):
        if id(style) not in stats:
            stats[id(style)] = reference.style_stats(style)
        return reference.decode(content, stats[id(style)])

    return [
        Candidate("AdaIN reference (VGG relu4_1 + decoder)", reference, adain_cached,
                  sum(p.numel() for p in reference.parameters())),
        variational("variational, default (width 32, max 256)"),
        variational("variational, small (width 16, max 128)", width=16, max_width=128, style_dim=16),
        inverse_network(),
    ]


def median_time(fn, content, style, repeats: int, bf16: bool) -> float:
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        fn(content, style)  # warm-up (allocator, oneDNN kernel selection, cached style)
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn(content, style)
            times.append(time.perf_counter() - start)
    assert out.shape[-2:] == content.shape[-2:]
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    content, style = torch.rand(1, 3, args.size, args.size), torch.rand(1, 3, args.size, args.size)
    print(f"{args.size}x{args.size} px, {torch.get_num_threads()} thread(s), "
          f"{'bf16 autocast' if args.bf16 else 'float32'}, median of {args.repeats}")
    rows, reference = [], None
    for candidate in candidates():
        full = median_time(candidate.full, content, style, args.repeats, args.bf16)
        cached = median_time(candidate.cached, content, style, args.repeats, args.bf16) if candidate.cached else None
        reference = reference or (full, cached)
        rows.append((candidate, full, cached))
    print(f"{'model':44s} {'params':>8s} {'full s':>8s} {'x AdaIN':>8s} {'cached s':>9s} {'x AdaIN':>8s}")
    for candidate, full, cached in rows:
        cached_text = f"{cached:9.3f} {cached / reference[1]:8.2f}" if cached is not None else f"{'-':>9s} {'-':>8s}"
        print(f"{candidate.name:44s} {candidate.parameters / 1e6:7.2f}M {full:8.3f} {full / reference[0]:8.2f} "
              f"{cached_text}")
    inverse_swap_share(content, style, args.repeats, args.bf16)



# -- the style-swap inverse network (Chen & Schmidt): VGG relu3_1 -> style swap -> decoder ----------

class InverseTiming(nn.Module):
    """``nststyle``'s inverse-network inference (what ``stylize.InverseStylizer`` runs) in its three stages."""

    def __init__(self):
        super().__init__()
        self.encoder = VGGEncoder(["relu3_1"], weights="random")
        self.decoder = InverseNet()

    def encode(self, images):
        return self.encoder(images)["relu3_1"]

    def forward(self, content, style):
        return self.decoder(style_swap(self.encode(content), self.encode(style)))


def inverse_network() -> Candidate:
    model = InverseTiming().eval()
    features = {}

    def cached(content, style):  # style activations computed once; the swap still runs per content
        if id(style) not in features:
            features[id(style)] = model.encode(style)
        return model.decoder(style_swap(model.encode(content), features[id(style)]))

    return Candidate("inverse network (relu3_1 + swap + decoder)", model, cached,
                     sum(p.numel() for p in model.parameters()))


def inverse_swap_share(content, style, repeats: int, bf16: bool) -> None:
    """Median time of each stage of one inverse-network stylisation and the swap's share of the total."""
    model = InverseTiming().eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        content_features, style_features = model.encode(content), model.encode(style)
        swapped = style_swap(content_features, style_features)
        stages = {"encode content + style": lambda: (model.encode(content), model.encode(style)),
                  "style swap": lambda: style_swap(content_features, style_features),
                  "decode": lambda: model.decoder(swapped)}
        times = {}
        for name, stage in stages.items():
            stage()  # warm-up
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                stage()
                runs.append(time.perf_counter() - start)
            times[name] = statistics.median(runs)
        # infer.py's patch_size/stride options: a stride s scores 1/s^4 of the patch pairs, but the pixel
        # dot products behind every score (one matrix product) are the same for any stride < patch size
        swap_options = {(patch_size, stride): median_time(
            lambda c, s, p=patch_size, t=stride: style_swap(c, s, p, t), content_features, style_features, repeats,
            bf16) for patch_size, stride in ((3, 2), (5, 2), (5, 3))}
    total = sum(times.values())
    print(f"inverse network stages at {content.shape[-1]} px (relu3_1 {tuple(content_features.shape[-2:])}): "
          + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in times.items())
          + f"; total {total:.3f} s, swap {100 * times['style swap'] / total:.0f} %")
    print("style swap with other patch_size/stride (x the default 3/1): " + ", ".join(
        f"{p}/{t} {seconds:.3f} s ({seconds / times['style swap']:.2f}x)" for (p, t), seconds in swap_options.items()))


if __name__ == "__main__":
    main()
