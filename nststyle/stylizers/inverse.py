"""Chen & Schmidt's style-swap inverse network as a ``Stylizer``."""
from __future__ import annotations

import torch

from ..checkpoints import load_net_state, submodule_state
from ..errors import StylizeError
from ..features import VGGEncoder
from ..models.inverse import InverseNet
from ..swap import style_swap
from .base import Stylizer, check_swap_mode, register


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
