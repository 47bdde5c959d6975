"""Export shipped models and checkpoints to ONNX, and run the exported files without nststyle's models.

    python infer.py mode=export ckpt=variational output=exported/      # or any checkpoint from train.py

The variational model becomes two graphs with dynamic image sizes:
``<name>.onnx`` (content, style) -> image and ``<name>_decode.onnx`` (content, style code) -> image
(for mixing, sampling and interpolating codes outside PyTorch). The inverse network becomes a two-stage
pipeline: ``<name>_encoder.onnx`` (image -> relu3_1) and ``<name>_decoder.onnx`` (relu3_1 -> image), with
the style swap between them (``nststyle.swap.style_swap``, or any exact swap) because its patch
count depends on the style image. ``nststyle.stylize.ExportedStylizer`` runs either with onnxruntime, so
``infer.py ckpt=exported/variational.onnx`` works like the checkpoint. Needs ``pip install "nststyle[export]"``
(onnxscript, onnxruntime). ``export_format=torchscript`` writes the same graphs as ``.ts`` files
(``torch.jit.trace``), which need torch alone.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .stylize import InverseStylizer, Stylizer, StylizeError, VariationalStylizer


class StyleTransferGraph(nn.Module):
    """(content, style) -> image through the style code's posterior mean: what ``stylize`` does at alpha 1."""

    def __init__(self, stylizer: VariationalStylizer):
        super().__init__()
        self.net = stylizer.net

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.net.decode(content, self.net.encode_style(style)[0])


class DecodeGraph(nn.Module):
    def __init__(self, stylizer: VariationalStylizer):
        super().__init__()
        self.net = stylizer.net

    def forward(self, content: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.net.decode(content, code)


class EncoderGraph(nn.Module):
    def __init__(self, stylizer: InverseStylizer):
        super().__init__()
        self.encoder, self.layer = stylizer.encoder, stylizer.layer

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image, layers=[self.layer])[self.layer]


def _size(name: str, multiple: int) -> torch.export.Dim:
    return multiple * torch.export.Dim(name, min=2, max=8192 // multiple)


def _export(module: nn.Module, inputs: tuple, names: list[str], dynamic: dict, path: Path) -> Path:
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; say so before it fails deep inside)
    except ImportError:
        raise StylizeError('ONNX export needs onnxscript: pip install "nststyle[export]"') from None
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(module.eval(), inputs, str(path), dynamo=True, external_data=False, input_names=names,
                      output_names=["output"], dynamic_shapes=dynamic, verbose=False)
    return path


def _graphs(stylizer: Stylizer) -> list[tuple[str, nn.Module, tuple, list[str], dict]]:
    """(file suffix, module, example inputs, input names, dynamic H/W dims) of each graph of ``stylizer``."""
    m = stylizer.multiple
    content, style = torch.rand(1, 3, 8 * m, 10 * m), torch.rand(1, 3, 64, 72)
    image = {2: _size("height", m), 3: _size("width", m)}
    if isinstance(stylizer, VariationalStylizer):
        code = torch.zeros(1, stylizer.net.style_dim)
        return [("", StyleTransferGraph(stylizer), (content, style), ["content", "style"],
                 {"content": image, "style": {2: _size("style_height", 1), 3: _size("style_width", 1)}}),
                ("_decode", DecodeGraph(stylizer), (content, code), ["content", "code"],
                 {"content": image, "code": None})]
    if isinstance(stylizer, InverseStylizer):
        with torch.no_grad():
            features = stylizer.encode(content)
        return [("_encoder", EncoderGraph(stylizer), (content,), ["image"], {"image": image}),
                ("_decoder", stylizer.net, (features,), ["features"],
                 {"features": {2: _size("height", 1), 3: _size("width", 1)}})]
    raise StylizeError(f"no export for a {stylizer.kind!r} model")


def export_onnx(stylizer: Stylizer, out_dir: str | Path, name: str) -> list[Path]:
    """Write the ONNX graph(s) of ``stylizer`` (on the CPU, float32) into ``out_dir``; returns the files."""
    with torch.no_grad():
        return [_export(module, inputs, names, dynamic, Path(out_dir) / f"{name}{suffix}.onnx")
                for suffix, module, inputs, names, dynamic in _graphs(stylizer)]


def export_torchscript(stylizer: Stylizer, out_dir: str | Path, name: str) -> list[Path]:
    """Write the same graphs as TorchScript (``torch.jit.trace``; ``<name>.ts`` ...), which torch alone runs
    (``torch.jit.load``), at any image size: the traced graphs keep H and W symbolic. PyTorch deprecates
    TorchScript in favour of ``torch.export``; ONNX is the format to prefer."""
    files = []
    for suffix, module, inputs, _, _ in _graphs(stylizer):
        path = Path(out_dir) / f"{name}{suffix}.ts"
        path.parent.mkdir(parents=True, exist_ok=True)
        # the tracer warns about input checks and size tests (instance norm's) it records as constants:
        # they hold at every size, as the tests at other sizes show
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(module.eval(), inputs, check_trace=False)
        tmp = path.with_name(f".{path.name}.tmp")
        traced.save(str(tmp))
        os.replace(tmp, path)
        files.append(path)
    return files


EXPORTERS = {"onnx": export_onnx, "torchscript": export_torchscript}
