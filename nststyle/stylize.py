"""Feed-forward stylisation, the names applications import:

    stylizer = load_stylizer("variational")            # a shipped model, a checkpoint or an exported file
    out = stylizer.stylize(content, style, alpha=0.8)  # Bx3xHxW in [0, 1]
    run_stylize(stylizer, "photos/", ["a.jpg", "b.jpg"], "out/result.png")   # files + contact sheet

Where each part lives: the checkpoint contract in ``nststyle.checkpoints``, the loader in ``nststyle.loading``, the
model kinds in ``nststyle.stylizers`` (a new kind: a ``Stylizer`` subclass registered with ``@register("kind")``),
exported files' writers and readers in ``nststyle.export``, the file drivers in ``nststyle.drivers``.
"""
from __future__ import annotations

from .checkpoints import COLOUR_CARD, load_net_state, read_checkpoint, submodule_state
from .drivers import Written, colour_matched, run_interpolate, run_mix, run_sample, run_stylize
from .errors import StylizeError
from .export import EXPORTED_SUFFIXES, METADATA_KEY, ExportedStylizer
from .loading import load_stylizer
from .stylizers import (PRECISIONS, STYLIZERS, InverseStylizer, Stylizer, VariationalStylizer, default_device,
                        register, slerp)

__all__ = ["COLOUR_CARD", "EXPORTED_SUFFIXES", "METADATA_KEY", "PRECISIONS", "STYLIZERS", "ExportedStylizer",
           "InverseStylizer", "StylizeError", "Stylizer", "VariationalStylizer", "Written", "colour_matched",
           "default_device", "load_net_state", "load_stylizer", "read_checkpoint", "register", "run_interpolate",
           "run_mix", "run_sample", "run_stylize", "slerp", "submodule_state"]
