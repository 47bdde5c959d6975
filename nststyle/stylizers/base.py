"""The ``Stylizer`` interface every model kind implements (stylise, tiles, colour post-processing, precision),
its registry of kinds and the errors it raises; ``nststyle.loading`` builds one from a file."""
from __future__ import annotations

import torch
from torch import nn

from ..checkpoints import COLOUR_CARD
from ..errors import StylizeError
from ..images import recolour_like, resize_max
from ..registry import registering
from ..swap import SWAP_MODES
from ..tiling import stylize_tiled

STYLIZERS: dict[str, type["Stylizer"]] = {}


# ``@register("variational")`` makes checkpoints of that kind loadable
register = registering(STYLIZERS, "kind")


PRECISIONS = ("fp32", "bf16", "auto")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_swap_mode(swap_mode: str | None) -> str:
    """The inverse network's style-swap mode, ``exact`` when None; anything else than ``SWAP_MODES`` is refused."""
    swap_mode = "exact" if swap_mode is None else str(swap_mode)
    if swap_mode not in SWAP_MODES:
        raise StylizeError(f"unknown swap_mode {swap_mode!r}: {' or '.join(SWAP_MODES)}")
    return swap_mode


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
        return recolour_like(output, [style.to(output.device) for style in styles], weights, self.colour_shift,
                             self.colour_match)

    def _unsupported(self, mode: str):
        raise StylizeError(f"mode={mode} needs a model with a style latent space; this checkpoint is a {self.kind!r} model")

    def mix(self, content, styles, weights, own_weight=0.0):
        self._unsupported("mix")

    def sample(self, content, count, seed=0, temperature=1.0):
        self._unsupported("sample")

    def interpolate(self, content, style_a, style_b, steps, method="slerp"):
        self._unsupported("interpolate")
