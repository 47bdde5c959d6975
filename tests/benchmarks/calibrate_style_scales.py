"""Choose beta' (the default scale of each style loss) so that gamma = 1 balances content and style.

For photo/painting pairs at 256 px with the Caffe VGG-19, measure each term's image-gradient norm where
it is unsatisfied: the content loss (relu4_2, to the photo) at the painting, and the raw style loss
(scale 1, to the painting) at the photo. beta' = median of |grad content| / |grad style|. Prints the
ratios and the one-significant-digit value next to the default in nststyle.losses.

    python tests/benchmarks/calibrate_style_scales.py [--size 256] [--pairs 4]
"""
import argparse
import statistics
from pathlib import Path

import torch

from nststyle.features import CONTENT_LAYER, STYLE_LAYERS, VGGEncoder
from nststyle.images import load_image
from nststyle.losses import STYLE_LOSSES, ContentLoss, style_loss

IMAGES = Path(__file__).resolve().parents[3] / "shared" / "images"


def grad_norm(loss_fn, encoder, image):
    image = image.clone().requires_grad_()
    loss_fn(encoder(image)).backward()
    return image.grad.norm().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--images", type=Path, default=IMAGES)
    args = parser.parse_args()
    photos = sorted((args.images / "content").glob("*.jp*g"))[:: 7][: args.pairs]
    paintings = sorted((args.images / "style").glob("*.jp*g"))[:: 11][: args.pairs]
    encoder = VGGEncoder(STYLE_LAYERS + (CONTENT_LAYER,), weights="caffe")
    ratios = {kind: [] for kind in STYLE_LOSSES}
    for photo_path, painting_path in zip(photos, paintings):
        photo = load_image(photo_path, args.size)[None]
        # content loss compares maps position by position: put the painting on the photo's grid
        painting = torch.nn.functional.interpolate(load_image(painting_path, args.size)[None], size=photo.shape[-2:],
                                                   mode="bilinear", antialias=True)
        content = ContentLoss().set_target(encoder(photo))
        content_grad = grad_norm(content, encoder, painting)
        style_features = encoder(painting)
        for kind in STYLE_LOSSES:
            loss = style_loss(kind, scale=1.0).set_target(style_features)
            ratios[kind].append(content_grad / grad_norm(loss, encoder, photo))
        print(f"{photo_path.name[:40]:40s} x {painting_path.name[:40]:40s} |grad content| = {content_grad:.3g}")
    print(f"\n{'kind':14s} {'median ratio':>14s} {'beta_prime':>12s} {'default':>10s}   ratios")
    for kind, values in ratios.items():
        median = statistics.median(values)
        print(f"{kind:14s} {median:14.3g} {float(f'{median:.0e}'):12.0e} {STYLE_LOSSES[kind].default_scale:10.0e}   "
              + " ".join(f"{v:.2g}" for v in values))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
