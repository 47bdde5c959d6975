"""Stylisation by optimising the image (Gatys et al.; Li et al.; Chen & Schmidt): the exact, slow path.

The image's pixels are optimised (L-BFGS or Adam) to minimise

* a distribution-alignment style loss of the zoo (``nststyle.losses.style_loss``):
  ``alpha * content(relu4_2) + gamma * style + tv_weight * TV``, or
* the style-swap objective (``loss="swap"``): ``alpha * ||Phi(I) - Phi_ss(C, S)||^2 + tv_weight * TV``
  at relu3_1, with ``Phi_ss`` the style-swapped content features (``nststyle.swap.style_swap``).

The style (and the content, and the swap target) are encoded once. Pixels are optimised
unconstrained, as in Gatys et al. (clamping inside L-BFGS would break its curvature pairs), and the
result is clamped to [0, 1] when read out. Optimisation stops when the total loss changed by less
than ``rel_tol`` (relative) for ``patience`` consecutive iterations, or after ``max_iter``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .features import CONTENT_LAYER, VGGEncoder
from .images import list_images, load_image, match_color, save_image
from .losses import ContentLoss, content_distance, style_loss, total_variation
from .swap import style_swap

SWAP_LAYER = "relu3_1"


@dataclass
class History:
    """Per-iteration values of every loss term (``terms["total"]`` is the objective) and timing."""
    terms: dict[str, list[float]] = field(default_factory=dict)
    step_seconds: list[float] = field(default_factory=list)  # wall-clock time of each iteration
    seconds: float = 0.0  # the whole loop, including the initial evaluation
    stopped_early: bool = False

    @property
    def iterations(self) -> int:
        return len(self.terms.get("total", []))

    def append(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.terms.setdefault(name, []).append(value)


class DistributionObjective(nn.Module):
    """``alpha * content + gamma * style + tv_weight * TV`` for a style loss of the zoo or a fusion."""

    def __init__(self, loss, content_weight=1.0, style_weight=1.0, layer_weights=None, content_layer=CONTENT_LAYER,
                 tv_weight=0.0, loss_options=None):
        super().__init__()
        self.style = loss if isinstance(loss, nn.Module) else style_loss(loss, layer_weights, **(loss_options or {}))
        self.content = ContentLoss(content_layer)
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight

    @property
    def layers(self) -> tuple[str, ...]:
        content = (self.content.layer,) if self.content_weight else ()
        return tuple(dict.fromkeys(self.style.layers + content))

    @torch.no_grad()
    def set_targets(self, encoder, content: torch.Tensor, style: torch.Tensor) -> None:
        self.style.set_target(encoder(style, self.style.layers))
        if self.content_weight:
            self.content.set_target(encoder(content, self.content.layers))

    def forward(self, features, image) -> dict[str, torch.Tensor]:
        terms = {"style": self.style_weight * self.style(features)}
        if self.content_weight:
            terms["content"] = self.content_weight * self.content(features)
        if self.tv_weight:
            terms["tv"] = self.tv_weight * total_variation(image)
        return terms


class SwapObjective(nn.Module):
    """``alpha * ||Phi(I) - Phi_ss(C, S)||^2 + tv_weight * TV`` at relu3_1 (Chen & Schmidt, eq. 4); the
    feature distance is a mean over elements, like the content loss."""

    def __init__(self, content_weight=1.0, tv_weight=1.0, layer=SWAP_LAYER, patch_size=3, stride=1):
        super().__init__()
        self.content_weight, self.tv_weight = content_weight, tv_weight
        self.layer, self.patch_size, self.stride = layer, patch_size, stride
        self.target: torch.Tensor | None = None

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    @torch.no_grad()
    def set_targets(self, encoder, content, style) -> None:
        self.target = style_swap(encoder(content, self.layers)[self.layer], encoder(style, self.layers)[self.layer],
                                 self.patch_size, self.stride)

    def forward(self, features, image) -> dict[str, torch.Tensor]:
        terms = {"swap": self.content_weight * content_distance(features[self.layer], self.target).mean()}
        if self.tv_weight:
            terms["tv"] = self.tv_weight * total_variation(image)
        return terms


def _as_batch(image: torch.Tensor) -> torch.Tensor:
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"expected one RGB image (3xHxW or 1x3xHxW), got shape {tuple(image.shape)}")
    return image


def initial_image(init, content: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``"content"`` (a copy), ``"noise"`` (uniform in [0, 1]) or an image tensor (resized to the content)."""
    if isinstance(init, torch.Tensor):
        image = _as_batch(init).to(content)
        if image.shape != content.shape:
            image = nn.functional.interpolate(image, size=content.shape[-2:], mode="bilinear", antialias=True,
                                              align_corners=False)
        return image.clone()
    if init == "content":
        return content.clone()
    if init == "noise":
        return torch.rand(content.shape, generator=generator).to(content)
    raise ValueError(f"init must be 'content', 'noise' or an image tensor, got {init!r}")


def _optimizer(name: str, image: torch.Tensor, lr: float | None) -> torch.optim.Optimizer:
    if name == "lbfgs":
        # One function evaluation per step(); the curvature history persists between steps. Its own
        # tolerances are off: the relative-change rule decides, whatever the loss's scale.
        return torch.optim.LBFGS([image], lr=lr or 1.0, max_iter=1, history_size=100, tolerance_grad=0.0,
                                 tolerance_change=0.0)
    if name == "adam":
        return torch.optim.Adam([image], lr=lr or 0.02)
    raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {name!r}")


def converged(totals: list[float], rel_tol: float, patience: int) -> bool:
    """True when each of the last ``patience`` iterations changed the loss by less than ``rel_tol``."""
    if len(totals) <= patience:
        return False
    recent = totals[-patience - 1:]
    return all(abs(b - a) <= rel_tol * abs(a) for a, b in zip(recent, recent[1:]))


def stylize_by_optimization(content: torch.Tensor, style: torch.Tensor, loss="w2", content_weight: float = 1.0,
                            style_weight: float = 1.0, layer_weights: dict[str, float] | None = None,
                            content_layer: str = CONTENT_LAYER, init=None, optimizer: str = "lbfgs",
                            max_iter: int = 1000, rel_tol: float = 0.005, patience: int = 5,
                            tv_weight: float | None = None, preserve_color: bool = False,
                            encoder: VGGEncoder | None = None, vgg_weights: str = "caffe", lr: float | None = None,
                            loss_options: dict | None = None, max_step: float | None = 0.1, seed: int | None = 0,
                            progress: bool = True, callback=None) -> tuple[torch.Tensor, History]:
    """Stylise ``content`` with ``style`` (``3xHxW`` or ``1x3xHxW`` in [0, 1], same device) by optimisation.

    Args:
        loss: a style loss kind (``gram, mmd_linear, mmd_poly, mmd_gaussian, bn, w2``), a fusion
            (``"bn+mmd_poly"`` or ``{"bn": 1, "mmd_poly": 0.5}``), a built style-loss module, or ``"swap"``.
        content_weight: alpha; 0 reconstructs the style alone (texture synthesis from noise).
            For ``"swap"`` it weighs the feature reconstruction term.
        style_weight: gamma, the balance on top of each loss's calibrated scale beta'.
        init: ``"content"``, ``"noise"``, an image tensor, or None: content, or noise when alpha = 0.
        tv_weight: total-variation weight (default 0 for style losses; 1 for ``"swap"``, where TV is then
            a few % of the feature term at 256 px with the Caffe VGG: a mild smoothing).
        preserve_color: give the style the content's colour statistics first (Gatys et al. 2017).
        encoder: a ``VGGEncoder`` with the needed layers (default: one built here from ``vgg_weights``);
            its weights are switched to channels-last memory format (values unchanged).
        loss_options: extra style-loss options (``scale``, ``c``, ``max_pairs`` ...; for ``"swap"``:
            ``layer``, ``patch_size``, ``stride``).
        max_step: the largest change of any pixel in one iteration (longer steps are shortened along
            their direction); None for none.
        callback: called as ``callback(iteration, image, values)`` after every iteration (not timed
            in ``History.step_seconds``), e.g. to save snapshots.

    Returns the image (same dims as ``content``, clamped to [0, 1]) and the loss history.
    """
    squeeze = content.dim() == 3
    content, style = _as_batch(content), _as_batch(style).to(content)
    if preserve_color:
        style = match_color(style, content)
    if loss == "swap":
        objective = SwapObjective(content_weight, 1.0 if tv_weight is None else tv_weight, **(loss_options or {}))
    else:
        objective = DistributionObjective(loss, content_weight, style_weight, layer_weights, content_layer,
                                          tv_weight or 0.0, loss_options)
    encoder = _encoder_for(objective.layers, encoder, vgg_weights).to(content.device)
    objective.set_targets(encoder, content, style)

    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    init = init if init is not None else ("content" if content_weight else "noise")
    image = initial_image(init, content, generator).requires_grad_()
    history = _run(objective, encoder, image, _optimizer(optimizer, image, lr), max_iter, rel_tol, patience, progress,
                   max_step, callback)
    result = image.detach().clamp(0, 1)
    return (result[0] if squeeze else result), history


def _encoder_for(layers: tuple[str, ...], encoder: VGGEncoder | None, weights: str) -> VGGEncoder:
    """The encoder to use, its conv weights in channels-last memory format (values unchanged): oneDNN
    and cuDNN then skip a layout reorder per convolution, about 20 % of a CPU iteration at 256 px."""
    if encoder is None:
        encoder = VGGEncoder(layers, weights=weights)
    missing = set(layers) - set(encoder.layers)
    if missing:
        raise ValueError(f"the encoder was built without layers {sorted(missing)} that this loss needs")
    return encoder.to(memory_format=torch.channels_last)


def _limit_step(optimizer, image, before, max_step) -> None:
    """Shrink a step that moved a pixel by more than ``max_step`` back along its direction.

    L-BFGS without a line search estimates curvature from its first, tiny step; on stiff losses
    (W2's square roots of small eigenvalues) that estimate can send the next step thousands of
    units away. Shortening the step is a line-search backtrack: scaling L-BFGS's step length ``t``
    by the same factor keeps its next curvature pair ``s = t * d`` consistent with the real move.
    """
    with torch.no_grad():
        step = image - before
        largest = step.abs().max().item()
        if largest > max_step:
            factor = max_step / largest
            image.copy_(before + step * factor)
            state = optimizer.state[image]
            if "t" in state:  # torch.optim.LBFGS keeps the last step as d * t
                state["t"] *= factor


def _run(objective, encoder, image, optimizer, max_iter, rel_tol, patience, progress, max_step, callback) -> History:
    history, start = History(), time.perf_counter()
    bar = tqdm(total=max_iter, disable=not progress, desc="stylise", unit="it", dynamic_ncols=True)
    layers = objective.layers
    # L-BFGS has absolute thresholds (it skips curvature pairs with y.s < 1e-10): optimising
    # total / |initial total| makes its behaviour independent of the loss's scale.
    with torch.no_grad():
        initial = sum(objective(encoder(image, layers), image).values()).abs().item()
    scale = 1.0 / initial if 0 < initial < float("inf") else 1.0
    for _ in range(max_iter):
        values = {}

        def closure():
            optimizer.zero_grad(set_to_none=True)
            # the image stays contiguous for L-BFGS (it flattens gradients with view); a channels-last copy
            # feeds the encoder
            terms = objective(encoder(image.contiguous(memory_format=torch.channels_last), layers), image)
            total = sum(terms.values())
            (total * scale).backward()
            values.clear()
            values.update({name: term.item() for name, term in terms.items()}, total=total.item())
            return total * scale

        step_start = time.perf_counter()
        before = image.detach().clone() if max_step else None
        optimizer.step(closure)
        if max_step:
            _limit_step(optimizer, image, before, max_step)
        history.step_seconds.append(time.perf_counter() - step_start)
        history.append(values)
        if callback is not None:
            callback(history.iterations, image.detach(), values)
        bar.update()
        bar.set_postfix({name: f"{value:.4g}" for name, value in values.items()}, refresh=False)
        if not all(map(_finite, values.values())):
            raise FloatingPointError(f"the loss became non-finite at iteration {history.iterations}: {values}")
        if converged(history.terms["total"], rel_tol, patience):
            history.stopped_early = True
            break
    bar.close()
    history.seconds = time.perf_counter() - start
    return history


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


@dataclass
class OptimizeResult:
    """What ``stylize_file_by_optimization`` wrote."""
    path: Path
    size: tuple[int, int]  # height, width
    loss: str
    history: History
    seconds: float

    def summary(self) -> str:
        stop = "converged" if self.history.stopped_early else "max_iter reached"
        return (f"wrote {self.path} ({self.size[1]}x{self.size[0]}, loss {self.loss}, {self.history.iterations} "
                f"iterations, {stop}) in {self.seconds:.1f} s")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None or ``"auto"``: CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _single_image(path, role: str) -> Path:
    files = list_images(path)
    if len(files) != 1:
        raise ValueError(f"optimisation stylises one pair: {role}={path} holds {len(files)} images; pass one file")
    return files[0]


def stylize_file_by_optimization(content_path, style_path, output, loss="w2", loss_options: dict | None = None,
                                 max_size: int | None = 512, style_size: int | None = None, init=None,
                                 device=None, vgg_weights: str = "caffe", **options) -> OptimizeResult:
    """Read a photo and a painting, stylise by optimisation, write ``output``.

    ``init`` may also be an image path. Style images are resized to ``style_size`` (default
    ``max_size``). Other keyword arguments go to ``stylize_by_optimization``. Unreadable images raise
    ``nststyle.images.ImageError``; bad options raise ``ValueError``.
    """
    start = time.perf_counter()
    name = loss if isinstance(loss, str) else "+".join(loss)
    device = resolve_device(device)
    content_path, style_path = _single_image(content_path, "content"), _single_image(style_path, "style")
    if Path(output).resolve() in (content_path.resolve(), style_path.resolve()):
        raise ValueError(f"output={output} would overwrite an input: choose another output")
    content = load_image(content_path, max_size).to(device)
    style = load_image(style_path, style_size or max_size).to(device)
    if init not in (None, "content", "noise") and not isinstance(init, torch.Tensor):
        init = load_image(_single_image(init, "init"), max_size)
    image, history = stylize_by_optimization(content, style, loss=loss, loss_options=loss_options, init=init,
                                             vgg_weights=vgg_weights, **options)
    path = save_image(image, output)
    return OptimizeResult(path, tuple(image.shape[-2:]), name, history, time.perf_counter() - start)

