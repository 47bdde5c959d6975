"""The variational AdaIN model as a ``Stylizer``: every operation is a style code fed to the decoder."""
from __future__ import annotations

import hashlib

import torch

from ..checkpoints import load_net_state
from ..errors import StylizeError
from ..images import resize_max
from ..metrics import StyleMetrics
from ..models.variational import VariationalStyleNet
from ..refine import refine_style_code
from ..swap import bf16_is_fast
from .base import Stylizer, register


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
