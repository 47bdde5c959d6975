"""Optional loss terms of the variational model, each a class registered under the name its config uses:

    model:
      terms:
        structure: {weight: 1.0e+6}
        local_style: {weight: 4.0e+6}

A new term is a ``LossTerm`` subclass with ``@term("<name>")`` and a ``__call__`` that scores one batch
(``TermInputs``); its ``layers`` are the VGG layers it reads from the output's and the painting's features.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses import total_variation
from ..metrics import (LOCAL_LAYERS, invented_edges, local_style_distance, low_frequency_change, stability_gain,
                       structure_distance)
from ..registry import registering

TERMS: dict[str, type["LossTerm"]] = {}


# ``@term("structure")`` makes ``model.terms.structure`` build that class
term = registering(TERMS, "name")


@dataclass
class TermInputs:
    """One training batch as the terms see it."""
    content: torch.Tensor            # the photos
    output: torch.Tensor             # the network's results after the card's colour post-processing
    raw_output: torch.Tensor         # before it
    code: torch.Tensor               # the style codes the results were decoded from
    features: dict                   # VGG features of ``output``
    painting_features: dict          # VGG features of the paintings
    decode: object                   # (photos, codes) -> results: the network's decoder


class LossTerm:
    name = "term"
    layers: tuple[str, ...] = ()

    def __init__(self, weight: float):
        self.weight = float(weight)

    def __call__(self, batch: TermInputs) -> torch.Tensor:
        raise NotImplementedError


@term("tv")
class TotalVariation(LossTerm):
    """Smoothness of the output (total variation)."""

    def __call__(self, batch):
        return total_variation(batch.output.float())


@term("structure")
class Structure(LossTerm):
    """The evaluation's structure distance: 1 - correlation of the photo's and the output's edge maps, so
    outlines are kept and no shapes are painted over the photo."""

    def __call__(self, batch):
        return structure_distance(batch.output.float(), batch.content).mean()


@term("stability")
class Stability(LossTerm):
    """How far the output moves when the photo's tones move faintly (Gupta et al. 2017): a network that paints
    the paintings' contrast onto faint gradients (skies, walls) moves a lot."""

    def __call__(self, batch):
        change = low_frequency_change(batch.content)
        moved = batch.decode((batch.content + change).clamp(0, 1), batch.code)
        return stability_gain(batch.raw_output, moved, change)


@term("invented_edges")
class InventedEdges(LossTerm):
    """Shape-scale edges the output adds in the photo's flatter half (blobs and rings over skies and walls)."""

    def __call__(self, batch):
        return invented_edges(batch.output.float(), batch.content, per="photo").mean()


@term("local_style")
class LocalStyle(LossTerm):
    """The evaluation's local style figure: every window of the output's features must look like some window
    of its painting and back, which flat shapes in the painting's colours fail."""

    layers = LOCAL_LAYERS

    def __call__(self, batch):
        return local_style_distance(batch.features, batch.painting_features).mean()


def build_terms(terms: dict | None) -> list[LossTerm]:
    """``{name: {weight: w}}`` -> the terms of non-zero weight, in the config's order."""
    unknown = sorted(set(terms or {}) - set(TERMS))
    if unknown:
        raise ValueError(f"unknown loss terms {unknown}: {', '.join(TERMS)}")
    return [TERMS[name](**options) for name, options in (terms or {}).items() if options.get("weight")]
