"""Training the Chen & Schmidt inverse network Phi^-1 (DESIGN.md section 3).

Each step encodes the batch's photos and paintings once with the frozen VGG-19 (to relu3_1), assembles
the training activations -- natural photo activations, natural painting activations and style-swapped
(photo, painting) activations --, decodes them, encodes the decoded images again and minimises

    ||Phi(Phi^-1(z)) - z||^2 + tv_weight * TV(Phi^-1(z))     (+ optional pixel and style terms)

The swapped activations are the paper's augmentation: they are not the activations of any image, and a
decoder that never saw them inverts them badly (``n_swapped=0`` is that ablation).

Checkpoints carry the card ``nststyle.checkpoints`` writes and reads (with the swap's ``layer``, ``patch_size``
and ``stride``); the frozen encoder's weights stay in the checkpoint (see ``on_save_checkpoint``).
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ..checkpoints import write_card
from ..features import VGGEncoder
from ..losses import style_loss as build_style_loss, total_variation
from ..models.inverse import InverseNet
from ..swap import style_swap
from .variational import adam_with_schedule, drop_nonfinite_gradients, plain

SWAP_STYLE_LAYERS = {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0}


def swap_pairs(batch_size: int, count: int) -> tuple[list[int], list[int]]:
    """(photo, painting) indices of ``count`` swaps from a batch of ``batch_size`` photos and paintings:
    the diagonal first, then the shifted diagonals (``count = B**2`` gives every pair, as the reference
    code does: 2 photos x 2 paintings -> 4 swaps)."""
    if count > batch_size ** 2:
        raise ValueError(f"n_swapped={count} needs {count} (photo, painting) pairs, a data batch of "
                         f"{batch_size} has {batch_size ** 2} (raise data.batch_size)")
    pairs = [(photo, (photo + shift) % batch_size) for shift in range(batch_size) for photo in range(batch_size)]
    return [p for p, _ in pairs[:count]], [s for _, s in pairs[:count]]


class InverseNetwork(pl.LightningModule):
    """Args:
        net: :class:`InverseNet` keyword arguments (in_channels, widths, norm, upsample, output).
        vgg_weights: ``caffe`` (real training), ``torchvision``, a ``.pth`` path or ``random`` (tests).
        layer: the activation layer the decoder inverts (relu3_1 in the paper).
        n_photos / n_paintings / n_swapped: the minibatch mix (paper: 2 / 2 / 4).
        patch_size / stride: style-swap patches for the swapped activations (and the inference default).
        tv_weight: weight of ``total_variation`` (per-image sum of squared neighbour differences of the
            [0, 1] image) against the feature MSE (mean over elements, features at Caffe scale).
        pixel_weight: optional L1 loss of decoded natural activations against their own images.
        style_weight / style_loss / style_layers: optional style loss from the zoo (a ``conf/loss``
            entry: ``{"kind": ..., **options}``) between decoded swapped activations and their paintings.
        optimizer: Adam keyword arguments. scheduler: see ``lit.variational.lr_lambda``
            (``inverse`` with ``decay=1e-4`` is the reference code's Torch-7 learning-rate decay).
    """

    model_kind = "inverse"

    def __init__(self, net: dict | None = None, vgg_weights: str = "caffe", layer: str = "relu3_1",
                 n_photos: int = 2, n_paintings: int = 2, n_swapped: int = 4, patch_size: int = 3, stride: int = 1,
                 tv_weight: float = 0.5, pixel_weight: float = 0.0, style_weight: float = 0.0,
                 style_loss: dict | None = None, style_layers: dict | None = None, optimizer: dict | None = None,
                 scheduler: dict | None = None):
        super().__init__()
        self.save_hyperparameters({
            "net": plain(net or {}), "vgg_weights": vgg_weights, "layer": layer, "n_photos": n_photos,
            "n_paintings": n_paintings, "n_swapped": n_swapped, "patch_size": patch_size, "stride": stride,
            "tv_weight": tv_weight, "pixel_weight": pixel_weight, "style_weight": style_weight,
            "style_loss": plain(style_loss or {"kind": "gram"}), "style_layers": plain(style_layers or SWAP_STYLE_LAYERS),
            "optimizer": plain(optimizer or {"lr": 1e-3}),
            "scheduler": plain(scheduler or {"kind": "inverse", "decay": 1e-4})})
        self.net = InverseNet(**self.hparams.net)
        self.style_loss = None
        if style_weight > 0:
            options = dict(self.hparams.style_loss)
            self.style_loss = build_style_loss(options.pop("kind"), self.hparams.style_layers, **options)
        self.vgg = VGGEncoder((layer,) + (tuple(self.style_loss.layers) if self.style_loss else ()),
                              weights=vgg_weights)
        self.run_config: dict | None = None  # the resolved Hydra config; train.py sets it

    # -- the pieces ----------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vgg(images, layers=[self.hparams.layer])[self.hparams.layer]

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        return self.net(activations)

    @torch.no_grad()
    def training_activations(self, photos: torch.Tensor, paintings: torch.Tensor) -> dict:
        """One VGG pass over the photos and one over the paintings, then the minibatch mix:
        ``activations`` = [photos[:n_photos], paintings[:n_paintings], swaps], the part sizes, and the
        (photo, painting) indices behind each swap."""
        hp = self.hparams
        batch = min(len(photos), len(paintings))
        if max(hp.n_photos, hp.n_paintings) > batch:
            raise ValueError(f"the minibatch mix wants {hp.n_photos} photos and {hp.n_paintings} paintings, "
                             f"the data batch holds {batch} (raise data.batch_size)")
        if photos.shape[-2:] != paintings.shape[-2:]:
            raise ValueError(f"the inverse network decodes photo and painting crops in one batch, so they need one "
                             f"size (got {tuple(photos.shape[-2:])} and {tuple(paintings.shape[-2:])}): "
                             f"leave data.style_image_size unset")
        photo_features, painting_features = self.encode(photos), self.encode(paintings)
        photo_index, painting_index = swap_pairs(batch, hp.n_swapped)
        parts = [photo_features[:hp.n_photos], painting_features[:hp.n_paintings]]
        if hp.n_swapped:
            # in float32 (under bf16-mixed the features are bfloat16): the exact search, as at inference
            swapped = style_swap(photo_features[photo_index].float(), painting_features[painting_index].float(),
                                 hp.patch_size, hp.stride)
            parts.append(swapped.to(photo_features.dtype))
        return {"activations": torch.cat(parts), "sizes": [hp.n_photos, hp.n_paintings, hp.n_swapped],
                "photo_index": photo_index, "painting_index": painting_index}

    def losses(self, photos: torch.Tensor, paintings: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every loss term of a step; ``loss`` is the weighted total. ``recon_photo``, ``recon_painting``
        and ``recon_swapped`` split the reconstruction error by part of the mix (for the ablation)."""
        hp = self.hparams
        mix = self.training_activations(photos, paintings)
        targets, sizes = mix["activations"], mix["sizes"]
        decoded = self.net(targets)
        features = self.vgg(decoded, layers=(hp.layer,) + (self.style_loss.layers if self.style_loss else ()))
        # the sums in float32 also under bf16 autocast
        per_sample = (features[hp.layer].float() - targets.float()).pow(2).flatten(1).mean(1)
        terms = {"recon": per_sample.mean(), "tv": total_variation(decoded.float())}
        for name, part in zip(("recon_photo", "recon_painting", "recon_swapped"), per_sample.detach().split(sizes)):
            if len(part):
                terms[name] = part.mean()
        total = terms["recon"] + hp.tv_weight * terms["tv"]
        natural = hp.n_photos + hp.n_paintings
        if hp.pixel_weight > 0 and natural:
            images = torch.cat([photos[:hp.n_photos], paintings[:hp.n_paintings]])
            terms["pixel"] = F.l1_loss(decoded[:natural].float(), images.float())
            total = total + hp.pixel_weight * terms["pixel"]
        if self.style_loss is not None and hp.n_swapped:
            with torch.no_grad():
                self.style_loss.set_target(self.vgg(paintings[mix["painting_index"]], layers=self.style_loss.layers))
            terms["style"] = self.style_loss({name: value[natural:].float() for name, value in features.items()})
            total = total + hp.style_weight * terms["style"]
        terms["loss"] = total
        return terms

    # -- Lightning hooks -----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        photos, paintings = batch
        terms = self.losses(photos, paintings)
        self.log_dict({f"train/{name}": value.detach() for name, value in terms.items()}, batch_size=len(photos))
        self.log("loss", terms["loss"].detach(), prog_bar=True, logger=False, batch_size=len(photos))
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        photos, paintings = batch
        terms = self.losses(photos, paintings)
        self.log_dict({f"val/{name}": value for name, value in terms.items()}, batch_size=len(photos),
                      sync_dist=True)

    def configure_optimizers(self):
        return adam_with_schedule(self)

    def on_before_optimizer_step(self, optimizer) -> None:
        drop_nonfinite_gradients(self)

    # -- inference helper used by the image-grid callback ------------------------------------------
    @torch.no_grad()
    def stylize(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """One pass: VGG -> relu3_1 -> style swap (style batch 1 or pairwise) -> Phi^-1."""
        swapped = style_swap(self.encode(content), self.encode(style), self.hparams.patch_size, self.hparams.stride)
        return self.net(swapped)

    # -- checkpoints ---------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Unlike the variational model, the encoder is half of the inference model here and the decoder
        # only inverts the encoder it was trained against: its weights (2 MB up to relu3_1) stay in the
        # checkpoint, so ``random`` test encoders and future changes of the weight files cannot break it.
        hp = self.hparams
        write_card(checkpoint, self.model_kind, hp.net, hp.vgg_weights, self.run_config, layer=hp.layer,
                   patch_size=hp.patch_size, stride=hp.stride)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for key, value in self.vgg.state_dict().items():  # older checkpoints without the encoder
            checkpoint["state_dict"].setdefault(f"vgg.{key}", value)
        self.run_config = checkpoint.get("config", self.run_config)

