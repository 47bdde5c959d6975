"""``load_stylizer``: the right ``Stylizer`` for a checkpoint, a shipped model's name or an exported file."""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import torch

from .checkpoints import read_checkpoint
from .errors import StylizeError
from .export import EXPORTED_SUFFIXES, ExportedStylizer
from .pretrained import resolve
from .stylizers import PRECISIONS, STYLIZERS, Stylizer, default_device
from .swap import bf16_is_fast


def load_stylizer(path: str | Path, device: str | torch.device | None = None, precision: str = "fp32",
                  compile: bool = False, colour_shift: float | None = None, style_size: int | None = None,
                  colour_match: float | None = None, **options) -> "Stylizer":
    """Build the right ``Stylizer`` for a checkpoint (its ``nststyle.kind``), in eval mode on ``device``.

    ``precision``: ``fp32``, ``bf16`` (the networks under bfloat16 autocast, channels-last; the inverse
    network's with bfloat16 weights; normalisations, the style swap and the outputs stay float32), or ``auto``
    (``bf16`` where the device runs it natively, ``swap.bf16_is_fast``, else ``fp32``; what ``infer.py`` uses:
    the evaluation's figures of both shipped models agree to 0.001 between the two). ``compile``: ``torch.compile`` the networks (a minute
    on the first image and on each new size, then faster: for folders, the demo, video frames).
    ``colour_shift``: how far ``stylize_large`` moves a result's mean colour to its painting's (0: not at
    all, 1: onto it); None: what the model's card says (``nststyle.colour_shift``; 0 when it says nothing).
    ``colour_match``: then how far it moves the result's RGB covariance to its painting's (linear colour
    transfer, ``images.match_colour_statistics``); None: the card's (``nststyle.colour_match``, else 0).
    ``style_size``: the longer side the model reads a painting at for its style (``Stylizer.style_input``);
    None: the card's (``nststyle.style_size``; as given when it says nothing).
    ``options`` go to that kind's ``from_checkpoint`` (e.g. ``patch_size``/``stride``/``swap_mode`` of the
    inverse network's swap); an option the kind does not take is an error, never silently ignored."""
    if precision not in PRECISIONS:
        raise StylizeError(f"unknown precision {precision!r}: {' or '.join(PRECISIONS)}")
    if style_size is not None and int(style_size) < 16:
        raise StylizeError(f"style_size is the longer side paintings are read at, in pixels (16 or more), got {style_size}")
    if Path(path).suffix in EXPORTED_SUFFIXES:  # an exported model (nststyle.export)
        if not Path(path).is_file():
            raise StylizeError(f"exported model not found: {path}")
        if precision not in ("fp32", "auto") or compile:
            raise StylizeError("precision= and compile= apply to checkpoints; an exported model runs as exported")
        stylizer = ExportedStylizer(path, **options)
    else:
        stylizer = _checkpoint_stylizer(path, device, precision, compile, options)
    for name, value in (("colour_shift", colour_shift), ("colour_match", colour_match)):
        if value is not None:
            if not 0 <= float(value) <= 1:
                raise StylizeError(f"{name} is a strength between 0 and 1, got {value}")
            setattr(stylizer, name, float(value))
    if style_size is not None:
        stylizer.style_size = int(style_size)
    return stylizer


def _checkpoint_stylizer(path, device, precision: str, compile: bool, options: dict) -> "Stylizer":
    checkpoint = read_checkpoint(path)
    kind = checkpoint["nststyle"].get("kind")
    path = resolve(path)
    if kind not in STYLIZERS:
        raise StylizeError(f"checkpoint {path} holds a {kind!r} model; this version knows {', '.join(STYLIZERS)}")
    cls = STYLIZERS[kind]
    accepted = inspect.signature(cls.from_checkpoint).parameters
    unknown = sorted(name for name in options if name not in accepted)
    if unknown:
        raise StylizeError(f"{', '.join(unknown)} do(es) not apply to a {kind!r} checkpoint")
    stylizer = cls.from_checkpoint(checkpoint, torch.device(device) if device else default_device(), **options)
    stylizer.style_size = checkpoint["nststyle"].get("style_size")  # the scale a shipped model reads paintings at
    if precision == "auto":
        precision = "bf16" if bf16_is_fast(stylizer.device) else "fp32"
    elif precision == "bf16" and not bf16_is_fast(stylizer.device):
        warnings.warn(f"precision=bf16 on a {stylizer.device.type} without native bfloat16 (no AVX512-BF16/AMX): "
                      "emulated, many times slower than fp32 (precision=auto picks fp32 here)", stacklevel=3)
    stylizer.precision = precision
    stylizer.prepare_networks()
    stylizer.read_colour_card(checkpoint["nststyle"])
    if compile:
        for network in stylizer.networks():
            network.compile()
    return stylizer
