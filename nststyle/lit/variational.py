"""LightningModule training ``VariationalStyleNet`` with losses measured by a frozen VGG-19.

    loss = content_weight * MSE(relu4_2)          (perceptual content)
         + style_weight   * style_loss(layers)    (Gram by default; any kind or fusion of nststyle.losses)
         + kl_weight * min(1, step / kl_warmup_steps) * KL(q(z|s) || N(0, I))
         + sum of the configured optional terms (``model.terms``, ``nststyle.lit.terms``: tv, structure,
           stability, invented_edges, local_style), each weight * term

Checkpoints carry the card ``nststyle.checkpoints`` writes and reads.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ..checkpoints import CARD_KEYS, COLOUR_CARD, write_card
from ..features import CONTENT_LAYER, VGGEncoder
from ..images import recolour_like
from ..losses import ContentLoss, kl_divergence, style_loss
from ..models.variational import VariationalStyleNet
from .terms import TermInputs, build_terms

# The paper's style layers: Gram matrices of the VGG layers up to relu4_2 (which is the content layer).
PAPER_STYLE_LAYERS = {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0}


def plain(value):
    """DictConfig/ListConfig -> dict/list (without importing omegaconf: the library stays Hydra-free)."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [plain(item) for item in value]
    return value


def lr_lambda(kind: str, total_steps: int, warmup_steps: int = 0, decay: float = 5e-5, min_factor: float = 0.0):
    """Step -> LR factor. ``inverse``: AdaIN's ``1 / (1 + decay * step)``; ``cosine``: to ``min_factor``
    at ``total_steps``; ``constant``. All with an optional linear warm-up."""
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        if kind == "constant":
            return warm
        if kind == "inverse":
            return warm / (1.0 + decay * step)
        if kind == "cosine":
            progress = min(1.0, step / max(1, total_steps))
            return warm * (min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress)))
        raise ValueError(f"unknown scheduler {kind!r} (constant, inverse, cosine)")
    return factor


def adam_with_schedule(module: pl.LightningModule) -> dict:
    """Adam on ``module.net`` (``hparams.optimizer``) with a per-step ``lr_lambda`` schedule
    (``hparams.scheduler``: ``kind`` plus its options), over ``trainer.max_steps`` when set."""
    trained = [parameter for parameter in module.net.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(trained, **module.hparams.optimizer)
    options = dict(module.hparams.scheduler)
    kind = options.pop("kind", "constant")
    total = module.trainer.max_steps if module.trainer and module.trainer.max_steps > 0 else 100_000
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(kind, total, **options))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def freeze_all_but(net: torch.nn.Module, train_only: list[str] | None) -> None:
    """Freeze every parameter of ``net`` outside the named submodules (None: train them all)."""
    if train_only is None:
        return
    names = dict(net.named_modules())
    unknown = [name for name in train_only if name not in names]
    if unknown:
        raise ValueError(f"train_only: no submodule {', '.join(unknown)} in the network "
                         f"(e.g. {', '.join(name for name in list(names)[1:6])})")
    prefixes = tuple(f"{name}." for name in train_only)
    for name, parameter in net.named_parameters():
        if not name.startswith(prefixes):  # what is frozen already (the style encoder's VGG) stays so
            parameter.requires_grad_(False)


def drop_nonfinite_gradients(module: pl.LightningModule) -> bool:
    """Before the optimiser step: when any gradient of ``module.net`` is inf/NaN, drop them all (Adam
    skips parameters without a gradient) and log it. A finite loss can still give inf gradients under
    bf16 autocast, and gradient clipping would then turn every weight into NaN."""
    gradients = [p.grad for p in module.net.parameters() if p.grad is not None]
    if not gradients or torch.isfinite(torch.stack([g.float().abs().max() for g in gradients])).all():
        return False
    for parameter in module.net.parameters():
        parameter.grad = None
    module.log("train/skipped_nonfinite_grad", 1.0, reduce_fx="sum")
    module.nonfinite_step = True  # read by callbacks.StopOnNonFinite
    return True


# the optional terms' weights at the top level of the model config, as runs before ``model.terms`` wrote them
TOP_LEVEL_WEIGHTS = {"tv_weight": "tv", "structure_weight": "structure", "stability_weight": "stability",
                     "invented_edges_weight": "invented_edges", "local_style_weight": "local_style"}


def network_arguments(net: dict | None, style_dim: int | None, vgg_weights: str) -> dict:
    """``VariationalStyleNet``'s constructor arguments as the model config gives them (``style_dim`` at the top
    level, for sweeps; a VGG style encoder shares the loss's VGG weights): what the checkpoint's card records."""
    net = plain(net or {})
    if style_dim is not None:
        net["style_dim"] = style_dim
    if net.get("style_encoder") == "vgg":
        net.setdefault("style_vgg_weights", vgg_weights)  # the same VGG as the loss: its features are reused
    return net


def inference_card(colour_shift: float, colour_match: float, card: dict | None) -> dict:
    """What inference of the checkpoints does: the colour post-processing the outputs were scored after, then
    ``card``'s entries."""
    unknown = sorted(set(card or {}) - set(CARD_KEYS))
    if unknown:
        raise ValueError(f"unknown card entries {unknown}: a checkpoint's card takes {', '.join(CARD_KEYS)}")
    colours = {name: value for name, value in zip(COLOUR_CARD, (colour_shift, colour_match)) if value}
    return {**colours, **plain(card or {})}


def all_terms(terms: dict | None, top_level: dict) -> dict:
    """``model.terms`` with the top-level ``*_weight`` keys that are set (not None) folded in over it."""
    terms = plain(terms or {})
    for key, weight in top_level.items():
        if weight is not None:
            terms[TOP_LEVEL_WEIGHTS[key]] = {**terms.get(TOP_LEVEL_WEIGHTS[key], {}), "weight": weight}
    return terms


class VariationalStyleTransfer(pl.LightningModule):
    """Args:
        net: ``VariationalStyleNet`` keyword arguments (widths, depths, norms).
        style_dim: size of the style code (overrides ``net["style_dim"]``; at the top level so that
            sweeps read ``model.style_dim=8,64``).
        loss: ``{"kind": "gram" | "w2" | "bn+mmd_poly" | ..., **options}`` (a ``conf/loss`` entry).
        style_layers: VGG layer -> weight for the style loss (default: relu1_1..relu4_1, as in the paper).
        vgg_weights: ``caffe`` (real training), ``torchvision``, a ``.pth`` path or ``random`` (tests).
        optimizer: Adam keyword arguments (``lr``, ``betas``, ``weight_decay``).
        scheduler: ``{"kind": "inverse" | "cosine" | "constant", "warmup_steps", "decay", "min_factor"}``.
        prior_samples: prior draws shown in the image grids.
        train_only: names of ``net`` submodules to train (e.g. ``[style_encoder, decoder.mapping]``: a new
            style path for a trained decoder); the others are frozen. None: all of them.
        colour_shift: score the output after moving its mean RGB by this much onto the painting's, as
            inference does with a model card's ``colour_shift`` (``images.shift_mean_colour``): the network
            then spends nothing on the mean colour that the shift sets anyway. 0: score it as it is.
        colour_match: then after moving its RGB covariance this far to the painting's, as a card's
            ``colour_match`` does (``images.recolour``); 0: not at all. Both go on the checkpoint's card.
        card: what inference reads from the checkpoint, as from a shipped file's card (``CARD_KEYS``:
            ``style_size``, the longer side paintings are read at for their code; ``colour_shift``, how far
            results move to the painting's mean colour; ``colour_match``, then to its colour covariance; see
            ``nststyle.stylize.load_stylizer``).
        style_code_scale: the style encoder reads the painting crop resized by this factor, while the
            style loss scores against it as it is: inference reads paintings smaller (``card.style_size``) than
            the scale their strokes should have in the output. 1: both read the crop as it is.
        terms: the optional loss terms, ``{name: {"weight": w}}`` (``nststyle.lit.terms``); a weight of 0 leaves
            the term out.
        tv_weight, structure_weight, stability_weight, invented_edges_weight, local_style_weight: the same terms'
            weights as top-level keys, as the commands of earlier runs set them; where set (not None) they
            override ``terms``.
    """

    model_kind = "variational"

    def __init__(self, net: dict | None = None, style_dim: int | None = None, loss: dict | None = None,
                 style_layers: dict | None = None,
                 content_layer: str = CONTENT_LAYER, vgg_weights: str = "caffe", content_weight: float = 1.0,
                 style_weight: float = 1.0, kl_weight: float = 1.0, kl_warmup_steps: int = 1000,
                 optimizer: dict | None = None, scheduler: dict | None = None,
                 prior_samples: int = 3, train_only: list[str] | None = None, colour_shift: float = 0.0,
                 card: dict | None = None, style_code_scale: float = 1.0, colour_match: float = 0.0,
                 terms: dict | None = None, tv_weight: float | None = None, structure_weight: float | None = None,
                 stability_weight: float | None = None, invented_edges_weight: float | None = None,
                 local_style_weight: float | None = None):
        super().__init__()
        card = inference_card(colour_shift, colour_match, card)  # refuses unknown entries before building anything
        net, loss = network_arguments(net, style_dim, vgg_weights), plain(loss or {"kind": "gram"})
        terms = all_terms(terms, {"tv_weight": tv_weight, "structure_weight": structure_weight,
                                  "stability_weight": stability_weight, "invented_edges_weight": invented_edges_weight,
                                  "local_style_weight": local_style_weight})
        style_layers = plain(style_layers or PAPER_STYLE_LAYERS)
        self.save_hyperparameters({"net": net, "loss": loss, "style_layers": style_layers,
                                   "content_layer": content_layer, "vgg_weights": vgg_weights,
                                   "content_weight": content_weight, "style_weight": style_weight,
                                   "kl_weight": kl_weight, "kl_warmup_steps": kl_warmup_steps,
                                   "optimizer": plain(optimizer or {"lr": 1e-4}),
                                   "scheduler": plain(scheduler or {"kind": "constant"}),
                                   "prior_samples": prior_samples, "train_only": plain(train_only),
                                   "colour_shift": colour_shift, "colour_match": colour_match, "card": card,
                                   "style_code_scale": style_code_scale, "terms": terms})
        self.net = VariationalStyleNet(**net)
        freeze_all_but(self.net, train_only)
        options = dict(loss)
        self.style_loss = style_loss(options.pop("kind"), style_layers, **options)
        self.content_loss = ContentLoss(content_layer)
        self.terms = build_terms(terms)
        layers = (*self.style_loss.layers, content_layer, *(layer for term in self.terms for layer in term.layers))
        self.vgg = VGGEncoder(tuple(dict.fromkeys(layers)), weights=vgg_weights)
        self.run_config: dict | None = None  # the resolved Hydra config; train.py sets it

    # -- losses ------------------------------------------------------------------------------------
    def kl_factor(self, step: int | None = None) -> float:
        """KL weight at ``step`` (default: the current global step), ramped up linearly."""
        step = self.global_step if step is None else step
        warmup = self.hparams.kl_warmup_steps
        return self.hparams.kl_weight * (min(1.0, step / warmup) if warmup > 0 else 1.0)

    def losses(self, content: torch.Tensor, style: torch.Tensor) -> dict[str, torch.Tensor]:
        """All loss terms for a batch of (content, style) pairs; one VGG pass for both targets."""
        with torch.no_grad():
            # Targets of content and style images, computed once per step (one batched pass when the
            # paintings are cropped at the photos' size).
            if content.shape == style.shape:
                targets = self.vgg(torch.cat([content, style]))
                content_features = {k: v[: len(content)] for k, v in targets.items()}
                style_features = {k: v[len(content):] for k, v in targets.items()}
            else:
                content_features, style_features = self.vgg(content), self.vgg(style)
            self.content_loss.set_target(content_features)
            self.style_loss.set_target(style_features)
        painting_features = style_features
        shared_vgg = self.hparams.net.get("style_vgg_weights") == self.hparams.vgg_weights
        code_input = self.code_input(style)
        if code_input is not style and shared_vgg:
            with torch.no_grad():
                style_features = self.vgg(code_input)
        mu, logvar = self.net.encode_style(code_input, style_features if shared_vgg else None)
        code = self.net.sample_code(mu, logvar)
        raw_output = self.net.decode(content, code)
        output = self.recolour(raw_output, style)
        features = self.vgg(output)
        terms = {"content": self.content_loss(features), "style": self.style_loss(features),
                 "kl": kl_divergence(mu.float(), logvar.float())}
        total = (self.hparams.content_weight * terms["content"] + self.hparams.style_weight * terms["style"]
                 + self.kl_factor() * terms["kl"])
        batch = TermInputs(content, output, raw_output, code, features, painting_features, self.net.decode)
        for term in self.terms:
            terms[term.name] = term(batch)
            total = total + term.weight * terms[term.name]
        terms["loss"] = total
        # Diagnostics of the code distribution (no gradient): prior samples are only meaningful when
        # the posterior means spread like N(0, I) (norm ~ sqrt(style_dim)) rather than far beyond it.
        terms["mu_norm"] = mu.detach().float().norm(dim=1).mean()
        terms["sigma"] = (0.5 * logvar.detach().float()).exp().mean()
        return terms

    def code_input(self, style: torch.Tensor) -> torch.Tensor:
        """The paintings as the style encoder reads them (``style_code_scale``)."""
        scale = self.hparams.get("style_code_scale", 1.0)
        if scale == 1.0:
            return style
        return F.interpolate(style, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)

    def training_step(self, batch, batch_idx):
        content, style = batch
        terms = self.losses(content, style)
        if not torch.isfinite(terms["loss"]):
            # One bad batch must not poison the weights and Adam's moments: skip the update (Lightning
            # skips backward and step on None).
            self.log("train/skipped_nonfinite", 1.0, reduce_fx="sum", batch_size=len(content))
            self.nonfinite_step = True
            return None
        self.log_dict({f"train/{name}": value.detach() for name, value in terms.items()},
                      prog_bar=False, batch_size=len(content))
        self.log("loss", terms["loss"].detach(), prog_bar=True, logger=False, batch_size=len(content))
        self.log("train/kl_weight", self.kl_factor(), batch_size=len(content))
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        content, style = batch
        terms = self.losses(content, style)  # eval mode: z = mu
        if len(content) > 1:
            # Posterior-collapse check: outputs decoded with another pair's code, scored against this
            # pair's style. style_gain = style_shuffled / style stays at 1 while the code is ignored.
            mu, _ = self.net.encode_style(self.code_input(style))
            terms["style_shuffled"] = self.style_loss(self.vgg(self.net.decode(content, mu.roll(1, 0))))
            terms["style_gain"] = terms["style_shuffled"] / terms["style"]
        self.log_dict({f"val/{name}": value for name, value in terms.items()}, batch_size=len(content),
                      sync_dist=True)

    # -- optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self):
        return adam_with_schedule(self)

    def on_before_optimizer_step(self, optimizer) -> None:
        drop_nonfinite_gradients(self)

    # -- inference helpers used by the image-grid callback -----------------------------------------
    @torch.no_grad()
    def stylize(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        mu, _ = self.net.encode_style(self.code_input(style))
        return self.recolour(self.net.decode(content, mu), style)

    def recolour(self, output: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """``output`` after the colour post-processing inference will apply (``images.recolour``)."""
        return recolour_like(output, [style], [1.0], self.hparams.colour_shift, self.hparams.colour_match)

    @torch.no_grad()
    def sample_prior(self, content: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode(content, z)

    # -- checkpoints -------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        write_card(checkpoint, self.model_kind, self.hparams.net, self.hparams.vgg_weights, self.run_config,
                   **self.hparams.card)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"].update({f"vgg.{key}": value for key, value in self.vgg.state_dict().items()})
        self.run_config = checkpoint.get("config", self.run_config)
