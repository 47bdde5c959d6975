"""Stylise images: ``python infer.py ckpt=CKPT content=PHOTO style=PAINTING output=OUT.png``.

A thin Hydra entry (conf/infer.yaml) that dispatches on ``method`` to the library:
``feedforward`` -> ``nststyle.stylize`` (a checkpoint from train.py; modes stylize, mix, sample,
interpolate); ``optimize`` -> ``nststyle.optimize`` (no checkpoint: optimise the image with the style
loss chosen by ``loss=`` from conf/loss/, e.g. ``loss=w2`` or ``loss=swap``).
Errors a user can fix print one line and exit with status 1.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from nststyle.features import WeightsUnavailableError
from nststyle.images import ImageError
from nststyle.optimize import stylize_file_by_optimization
from nststyle.stylize import StylizeError, load_stylizer, run_interpolate, run_mix, run_sample, run_stylize


def as_list(value):
    if value is None:
        return None
    return list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]


def feedforward(cfg: DictConfig) -> str:
    if not cfg.ckpt:
        raise StylizeError("method=feedforward needs ckpt=PATH (a checkpoint written by train.py)")
    swap_options = {key: cfg[key] for key in ("patch_size", "stride") if cfg.get(key) is not None}
    stylizer = load_stylizer(cfg.ckpt, cfg.device, **swap_options)
    styles = as_list(cfg.style)
    if cfg.mode != "sample" and not styles:
        raise StylizeError(f"mode={cfg.mode} needs style=IMAGE (or a folder, or style=[a.jpg,b.jpg])")
    shared = dict(max_size=cfg.max_size, grid_size=cfg.grid_size)
    if cfg.mode == "stylize":
        written = run_stylize(stylizer, cfg.content, styles, cfg.output, alpha=cfg.alpha,
                              preserve_color=cfg.preserve_color, style_size=cfg.style_size, **shared)
    elif cfg.mode == "mix":
        written = run_mix(stylizer, cfg.content, styles, cfg.output, weights=as_list(cfg.weights),
                          preserve_color=cfg.preserve_color, style_size=cfg.style_size, **shared)
    elif cfg.mode == "sample":
        written = run_sample(stylizer, cfg.content, cfg.output, count=cfg.count, seed=cfg.seed,
                             temperature=cfg.temperature, **shared)
    elif cfg.mode == "interpolate":
        written = run_interpolate(stylizer, cfg.content, styles, cfg.output, steps=cfg.steps,
                                  method=cfg.interpolation, preserve_color=cfg.preserve_color,
                                  style_size=cfg.style_size, **shared)
    else:
        raise StylizeError(f"unknown mode {cfg.mode!r}: stylize, mix, sample or interpolate")
    return written.summary(cfg.mode)


def optimize(cfg: DictConfig) -> str:
    if cfg.style is None:
        raise StylizeError("method=optimize needs style=IMAGE")
    loss_options = OmegaConf.to_container(cfg.loss, resolve=True)
    kind = loss_options.pop("kind")
    try:
        result = stylize_file_by_optimization(
            cfg.content, cfg.style, cfg.output, loss=kind, loss_options=loss_options, max_size=cfg.max_size,
            style_size=cfg.style_size, init=cfg.init, device=cfg.device, vgg_weights=cfg.vgg_weights,
            content_weight=cfg.content_weight, style_weight=cfg.style_weight, tv_weight=cfg.tv_weight,
            optimizer=cfg.optimizer, max_iter=cfg.max_iter, rel_tol=cfg.rel_tol, preserve_color=cfg.preserve_color,
            seed=cfg.seed, progress=cfg.progress)
    except (ValueError, WeightsUnavailableError) as error:  # bad options or missing weights: user-fixable
        raise StylizeError(str(error)) from None
    return result.summary()


# method name -> function(cfg) -> one-line summary
METHODS = {"feedforward": feedforward, "optimize": optimize}


def resolve_method(cfg: DictConfig) -> str:
    if cfg.method == "auto":
        return "feedforward" if cfg.get("ckpt") else "optimize"
    return cfg.method


@hydra.main(version_base="1.3", config_path="conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    method = resolve_method(cfg)
    try:
        if method not in METHODS:
            raise StylizeError(f"unknown method {method!r}: choose from {', '.join(METHODS)}"
                               + ("" if cfg.get("ckpt") else " (feedforward needs ckpt=PATH)"))
        print(METHODS[method](cfg))
    except (ImageError, StylizeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
