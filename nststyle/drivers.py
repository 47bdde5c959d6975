"""Files in, files out: stylise, mix, sample and interpolate folders of images (what ``infer.py`` calls)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import StylizeError
from .images import ImageError, list_images, load_image, match_color, save_grid, save_image
from .stylizers import Stylizer


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


def colour_matched(style: torch.Tensor, content: torch.Tensor, preserve_color: bool) -> torch.Tensor:
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
            result = stylizer.stylize_large(image, colour_matched(style, image, preserve_color), alpha,
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
        matched = [colour_matched(s, image, preserve_color) for _, s in style_list]
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
        results = stylizer.interpolate(image, colour_matched(a, image, preserve_color),
                                       colour_matched(b, image, preserve_color), steps, method)
        tags = [content_path.stem] if len(contents) > 1 else []
        width = int(math.log10(steps)) + 1
        for index, result in enumerate(results):
            written.images.append(save_image(result.cpu(), output_path(output, *tags, f"step{index:0{width}d}")))
        sheet += [a[0]] + [result[0].cpu() for result in results] + [b[0]]
    written.grid = save_grid(sheet, grid_path(output), nrow=steps + 2, size=grid_size)
    written.seconds = time.perf_counter() - start
    return written
