"""Stylise images: ``python infer.py ckpt=CKPT content=PHOTO style=PAINTING output=OUT.png``.

A thin Hydra entry (conf/infer.yaml) that dispatches on ``method`` to the library:
``feedforward`` -> ``nststyle.stylize`` (a checkpoint from train.py; modes stylize, mix, sample,
interpolate). Errors a user can fix print one line and exit with status 1.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, ListConfig

from nststyle.images import ImageError
from nststyle.stylize import StylizeError, load_stylizer, run_interpolate, run_mix, run_sample, run_stylize


def as_list(value):
    if value is None:
        return None
    return list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]


def feedforward(cfg: DictConfig) -> str:
    if not cfg.ckpt:
        raise StylizeError("method=feedforward needs ckpt=PATH (a checkpoint written by train.py)")
    stylizer = load_stylizer(cfg.ckpt, cfg.device)
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


# method name -> function(cfg) -> one-line summary
METHODS = {"feedforward": feedforward}


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
