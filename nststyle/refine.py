"""A variational model's style code refined for one painting: a quality mode, seconds once per painting.

The style encoder predicts a painting's code in one pass, from ~100 training paintings; the decoder can
do better with a better code (docs/models/variational.md). ``refine_style_code`` starts from the
mapped code ``w`` (what every AdaIN layer reads) and minimises, with L-BFGS, the evaluation's own style
distance (``nststyle.metrics``: per VGG layer, the relative gap of channel means and stds) of three stylised
photos against the painting, each scored after the model's colour shift, plus a little of their structure
distance to the photos (``STRUCTURE_WEIGHT``). The photos are scikit-image's
(``REFINE_PHOTOS``), never the one being stylised, so the code belongs to the painting and serves every
photo stylised with it afterwards (``VariationalStylizer`` keeps it per painting). ``steps`` counts
evaluations of the objective (one forward and backward pass over the three photos each), what the time
follows.

Why L-BFGS on ``w``: it lowers the evaluation's style distance below the encoder's codes (figures in
docs/models/variational.md, ``python infer.py mode=evaluate systems=[variational] refine_steps=30``) in ~21 s per
painting on one CPU thread under bfloat16 autocast, then ~0.17 s per photo as before; Adam needed more time
for less.
"""
from __future__ import annotations

import contextlib

import skimage.data
import torch
from tqdm.auto import tqdm

from .features import STYLE_LAYERS
from .images import painting_colours, recolour, resize_max
from .metrics import StyleMetrics, relative_gap, structure_distance
from .statistics import mean_std_vector
from .models.variational import VariationalStyleNet

REFINE_PHOTOS = ("astronaut", "chelsea", "coffee")  # a face, an animal, an object
LBFGS_HISTORY = 10
# The targets are the painting at the scale it is given, which callers make the output's (infer.py reads
# photos and paintings at max_size, the evaluation at 384 px): a result's strokes have the pixel scale of the
# decoder whatever the photo's size, so only the painting's scale sets the target. Against the painting at
# the code's 192 px the same steps paint bolder for a worse style (docs/models/variational.md). The
# photos are stylised at half the painting's longer side, at most ``MAX_PHOTO_SIZE``: the cost per step.
PHOTO_SCALE = 1 / 2
MAX_PHOTO_SIZE = 192
# Weight of the evaluation's structure distance of each photo's result to the photo, beside its style distance.
# More of it trades style for structure; 0.02 keeps all five figures of the shipped weights below the Magenta
# model's (docs/models/variational.md).
STRUCTURE_WEIGHT = 0.02


def refine_photos(size: int, multiple: int = 8) -> list[torch.Tensor]:
    """scikit-image's ``REFINE_PHOTOS`` as ``1x3xHxW`` in [0, 1], longer side ``size``, sides multiples of ``multiple``."""
    photos = []
    for name in REFINE_PHOTOS:
        image = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float()[None] / 255
        photos.append(resize_max(image, size, multiple))
    return photos


def refine_style_code(net: VariationalStyleNet, metrics: StyleMetrics, painting: torch.Tensor, w: torch.Tensor,
                      steps: int, colour_shift: float = 1.0, bf16: bool = False, progress: bool = True,
                      structure_weight: float | None = None, colour_match: float = 0.0) -> torch.Tensor:
    """``w`` (``1 x w_dim``, e.g. ``net.decoder.mapping(code)``) after L-BFGS (strong Wolfe line search, at most
    ``steps`` evaluations) on the mean style distance of the ``REFINE_PHOTOS`` stylised with it (at
    ``PHOTO_SCALE`` of ``painting``'s longer side) to ``painting`` (``1x3xHxW``), each result's mean colour first
    moved ``colour_shift`` of the way to the painting's and then its colour covariance ``colour_match`` of the way
    (as ``Stylizer.shift_colour`` does at inference), plus ``structure_weight`` (None: ``STRUCTURE_WEIGHT``)
    times each result's structure distance to its photo. The networks are left unchanged; ``bf16``: under
    bfloat16 autocast (CPUs with AVX512-BF16)."""
    structure_weight = STRUCTURE_WEIGHT if structure_weight is None else structure_weight
    with torch.inference_mode(False):  # callers may run under inference mode (the evaluation does)
        return _refine(net, metrics, painting.clone(), w, steps, (colour_shift, colour_match), bf16, progress,
                       structure_weight)


def _refine(net, metrics, painting, w, steps, colours, bf16, progress, structure_weight) -> torch.Tensor:
    device = painting.device
    size = min(MAX_PHOTO_SIZE, max(64, round(PHOTO_SCALE * max(painting.shape[-2:]))))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.no_grad(), autocast:
        target = {name: mean_std_vector(value) for name, value in metrics.encode(painting).items()
                  if name in STYLE_LAYERS}
        photos = [photo.to(device) for photo in refine_photos(size, net.multiple)]
        features = [net.content_encoder(photo) for photo in photos]
    colour_shift, colour_match = colours
    colour, covariance = painting_colours([painting], [1.0])  # once: the painting stays, the results change
    w = w.detach().float().clone().requires_grad_(True)
    # a 128-number smooth problem: L-BFGS needs fewer evaluations than Adam needs steps (module docstring)
    optimizer = torch.optim.LBFGS([w], lr=1, max_iter=steps, max_eval=steps, history_size=LBFGS_HISTORY,
                                  line_search_fn="strong_wolfe")
    bar = tqdm(total=steps, desc="refine style code", unit="step", leave=False, disable=not progress)

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = 0.0
        for photo, photo_features in zip(photos, features):
            with autocast:
                result = recolour(net.decoder.synthesize(photo_features, w).float(), colour, covariance,
                                  colour_shift, colour_match)
                output = metrics.encoder(result)
            loss = loss + torch.stack([relative_gap(mean_std_vector(output[name]), target[name])
                                       for name in STYLE_LAYERS]).mean()
            if structure_weight:
                loss = loss + structure_weight * structure_distance(result, photo).mean()
        loss.backward()
        if bar.n < steps:  # the line search may ask for one evaluation past max_eval
            bar.update()
        return loss

    trainable = [parameter for parameter in net.decoder.parameters() if parameter.requires_grad]
    with torch.enable_grad(), _frozen(trainable), bar:  # gradients for w alone
        if steps > 0:
            optimizer.step(objective)
    return w.detach()


@contextlib.contextmanager
def _frozen(parameters: list[torch.nn.Parameter]):
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)
