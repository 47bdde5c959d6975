"""Stylise images: ``python infer.py content=PHOTO style=PAINTING output=OUT.png``.

A thin Hydra entry (conf/infer.yaml) that dispatches on ``method`` to the library:
``feedforward`` -> ``nststyle.stylize`` (``ckpt=``: a shipped model, ``variational`` by default, or a
checkpoint from train.py; modes stylize, mix, sample, interpolate); ``optimize`` -> ``nststyle.optimize``
(no model: optimise the image with the style loss chosen by ``loss=`` from conf/loss/, e.g. ``loss=w2``
or ``loss=swap``); ``mode=evaluate`` -> ``nststyle.evaluate`` (score systems on photo/painting pairs);
a clip (or a folder of frames or clips, or ``output=OUT.mp4``) -> ``nststyle.video``;
``mode=serve`` -> ``nststyle.demo`` (the web demo on ``http://host:port``; pip install "nststyle[demo]").
Errors a user can fix print one line and exit with status 1.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from nststyle.evaluate import EvaluationError, evaluate, folder_pairs, holdout_pairs, tsv_pairs
from nststyle.cli import check_overrides
from nststyle.export import EXPORTERS
from nststyle.features import WeightsUnavailableError
from nststyle.images import ImageError
from nststyle.optimize import stylize_file_by_optimization
from nststyle.stylize import COLOUR_CARD, StylizeError, load_stylizer, run_interpolate, run_mix, run_sample, run_stylize
from nststyle.video import run_video, wants_video


def as_list(value):
    if value is None:
        return None
    return list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]


def needs_content(cfg: DictConfig) -> None:
    if cfg.content is None:
        raise StylizeError(f"mode={cfg.mode} needs content=IMAGE (a photo or a folder of photos)")


def model_options(cfg: DictConfig) -> dict:
    """The options of one model kind that are set (swap options of the inverse network, ``refine_steps`` of
    the variational model): ``load_stylizer`` refuses those a checkpoint's kind does not take."""
    return {key: cfg[key] for key in ("patch_size", "stride", "swap_mode", "refine_steps") if cfg.get(key) is not None}


def colour_options(cfg: DictConfig) -> dict:
    """``colour_shift``/``colour_match`` where the command line sets them (else the model's card decides)."""
    return {key: cfg[key] for key in COLOUR_CARD if cfg.get(key) is not None}


def feedforward(cfg: DictConfig) -> str:
    if not cfg.ckpt:
        raise StylizeError("method=feedforward needs ckpt=NAME_OR_PATH (variational, inverse or a checkpoint)")
    needs_content(cfg)
    stylizer = load_stylizer(cfg.ckpt, cfg.device, precision=cfg.precision, compile=cfg.compile,
                             style_size=cfg.style_size, **colour_options(cfg), **model_options(cfg))
    styles = as_list(cfg.style)
    if cfg.mode != "sample" and not styles:
        raise StylizeError(f"mode={cfg.mode} needs style=IMAGE (or a folder, or style=[a.jpg,b.jpg])")
    if wants_video(cfg.content, cfg.output):
        return video(cfg, stylizer, styles)
    shared = dict(max_size=cfg.max_size, grid_size=cfg.grid_size)
    if cfg.mode == "stylize":
        written = run_stylize(stylizer, cfg.content, styles, cfg.output, alpha=cfg.alpha,
                              preserve_color=cfg.preserve_color, tile=cfg.tile,
                              tile_overlap=cfg.tile_overlap, **shared)
    elif cfg.mode == "mix":
        written = run_mix(stylizer, cfg.content, styles, cfg.output, weights=as_list(cfg.weights),
                          preserve_color=cfg.preserve_color, **shared)
    elif cfg.mode == "sample":
        written = run_sample(stylizer, cfg.content, cfg.output, count=cfg.count, seed=cfg.seed,
                             temperature=cfg.temperature, **shared)
    elif cfg.mode == "interpolate":
        written = run_interpolate(stylizer, cfg.content, styles, cfg.output, steps=cfg.steps,
                                  method=cfg.interpolation, preserve_color=cfg.preserve_color, **shared)
    else:
        raise StylizeError(f"unknown mode {cfg.mode!r}: stylize, mix, sample, interpolate, evaluate, export or serve")
    if written.failed:  # the other files are written; the run still reports failure
        print(written.summary(cfg.mode))
        sys.exit(1)
    return written.summary(cfg.mode)


def video(cfg: DictConfig, stylizer, styles: list) -> str:
    written = run_video(stylizer, cfg.content, styles, cfg.output, mode=cfg.mode, alpha=cfg.alpha,
                        weights=as_list(cfg.weights), preserve_color=cfg.preserve_color, max_size=cfg.max_size,
                        consistency=cfg.consistency, fps=cfg.fps, progress=cfg.progress)
    if written.failed:  # the other clips are written; the run still reports failure
        print(written.summary())
        sys.exit(1)
    return written.summary()


def optimize(cfg: DictConfig) -> str:
    needs_content(cfg)
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


def evaluation(cfg: DictConfig) -> str:
    if cfg.pairs:
        pairs = tsv_pairs(cfg.pairs)
    elif cfg.content is not None or cfg.style is not None:
        if cfg.content is None or cfg.style is None:
            raise EvaluationError("mode=evaluate with content= needs style= too (every photo x every painting)")
        pairs = folder_pairs(cfg.content, cfg.style)
    else:
        pairs = holdout_pairs(cfg.images)
    pairs = pairs[: cfg.limit] if cfg.limit else pairs
    evaluate(as_list(cfg.systems), pairs, cfg.eval_dir, size=cfg.size, device=cfg.device, max_iter=cfg.eval_max_iter,
             sheet_inputs=cfg.sheet_inputs, style_size=cfg.style_size, precision=cfg.precision,
             colours=colour_options(cfg), model_options=model_options(cfg), stability=cfg.stability)
    return (f"evaluate: {len(pairs)} pairs x {len(as_list(cfg.systems))} systems -> {cfg.eval_dir}/results.csv\n"
            + Path(cfg.eval_dir, "summary.md").read_text())


def export(cfg: DictConfig) -> str:
    if cfg.export_format not in EXPORTERS:
        raise StylizeError(f"unknown export_format {cfg.export_format!r}: {', '.join(EXPORTERS)}")
    options = {"quantize": cfg.quantize} if cfg.quantize else {}
    if options and cfg.export_format not in ("onnx", "aoti"):
        raise StylizeError(f"quantize={cfg.quantize} applies to export_format=onnx or aoti")
    if cfg.export_format == "aoti":
        options["precision"] = cfg.precision
    elif cfg.precision not in ("auto", "fp32"):
        raise StylizeError(f"precision={cfg.precision} applies to export_format=aoti (onnx and torchscript: float32)")
    stylizer = load_stylizer(cfg.ckpt, "cpu")
    name = Path(str(cfg.ckpt)).stem
    files = EXPORTERS[cfg.export_format](stylizer, cfg.export_dir, name, **options)
    run = files[-1] if cfg.quantize else files[0]  # the quantised graph comes last
    return f"export: wrote {', '.join(map(str, files))} (run with: python infer.py ckpt={run} content=... style=...)"


def serve(cfg: DictConfig) -> str:
    try:  # gradio is an optional dependency that only the demo imports
        from nststyle.demo import serve as serve_demo
    except ImportError as error:
        raise StylizeError(str(error)) from None
    serve_demo(cfg.host, cfg.port, cfg.max_size, cfg.device, cfg.precision)
    return "serve: stopped"


# method name -> function(cfg) -> one-line summary
METHODS = {"feedforward": feedforward, "optimize": optimize}
# modes beside stylising (no method dispatch) -> function(cfg) -> summary
MODES = {"evaluate": evaluation, "export": export, "serve": serve}


@hydra.main(version_base="1.3", config_path="conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    try:
        if cfg.mode in MODES:
            print(MODES[cfg.mode](cfg))
            return
        if cfg.method not in METHODS:
            raise StylizeError(f"unknown method {cfg.method!r}: choose from {', '.join(METHODS)}")
        print(METHODS[cfg.method](cfg))
    except (ImageError, StylizeError, EvaluationError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    check_overrides("infer")
    main()
