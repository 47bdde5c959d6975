"""Export shipped models and checkpoints to ONNX, and run the exported files without nststyle's models.

    python infer.py mode=export ckpt=variational export_dir=exported/  # or any checkpoint from train.py
    python infer.py mode=export ckpt=variational quantize=int8         # + exported/variational_int8.onnx

The variational model becomes two graphs with dynamic image sizes:
``<name>.onnx`` (content, style) -> image and ``<name>_decode.onnx`` (content, style code) -> image
(for mixing, sampling and interpolating codes outside PyTorch). The inverse network becomes a two-stage
pipeline: ``<name>_encoder.onnx`` (image -> relu3_1) and ``<name>_decoder.onnx`` (relu3_1 -> image), with
the style swap between them (``nststyle.swap.style_swap``, or any exact swap) because its patch
count depends on the style image. ``ExportedStylizer`` (below) runs either with onnxruntime, so
``infer.py ckpt=exported/variational.onnx`` works like the checkpoint. Needs ``pip install "nststyle[export]"``
(onnxscript, onnxruntime). ``export_format=torchscript`` writes the same graphs as ``.ts`` files
(``torch.jit.trace``), which need torch alone; ``export_format=aoti`` as ``.pt2`` packages compiled ahead of time
for this machine's CPU (``export_aoti``: the fastest, bfloat16 where the CPU runs it natively). Each file records
the model's ``style_size`` and ``colour_shift``/``colour_match`` (ONNX metadata, an extra file of the TorchScript
file or the package), so the exported model reads paintings at the
scale the checkpoint does and ``ExportedStylizer`` shifts the result's colours as it does.

``quantize="int8"`` (``infer.py mode=export quantize=int8``, variational model, ONNX) also writes
``<name>_int8.onnx``: onnxruntime's static quantisation (QDQ, per-channel int8 weights, uint8 activations,
min/max calibration on the embedded sample set) of the style path, the frozen VGG-19 convolutions that read
the painting: the same evaluation figures as float32, 0.63-0.7x its time at 384 px on one thread, half the
file. The content encoder and the decoder stay float32: their convolutions read and write (AdaIN,
instance-norm) activations whose range is 30-100x their standard deviation, and 256 levels per tensor cost
them a visible error (mean absolute difference to the float32 graph 0.05 with every convolution in int8,
0.004 with the style path alone, on the sample set at 384 px; held-back content 1.053 and style 0.143
against 1.010 and 0.137). Nor does a part of them pay: each decoder convolution alone in int8 adds 0.001-0.02
to that difference for almost no time.

``export_format=aoti quantize=int8`` does the same for the AOTInductor package (``<name>_int8.pt2``: torchao's PT2E
quantisation, ``quantize_style_path_pt2e``; the content path in bfloat16 where the CPU runs it natively): on the
held-back pairs the same figures as the bfloat16 package (within 0.006), 0.77x its time at 384 px on one thread.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn
from torch.export.pt2_archive._package import package_pt2
from torchvision.transforms.functional import pil_to_tensor

from .checkpoints import COLOUR_CARD
from .errors import StylizeError
from .images import resize_max
from .sample_set import content_images, style_images
from .stylizers import PRECISIONS, InverseStylizer, Stylizer, VariationalStylizer, check_swap_mode
from .swap import bf16_is_fast, style_swap

EXPORTED_SUFFIXES = (".onnx", ".ts", ".pt2")  # nststyle.export's formats: onnx, torchscript, aoti
# the key under which an exported file (nststyle.export) records the model's card as JSON: ONNX metadata, a
# TorchScript extra file (e.g. {"style_size": 192})
METADATA_KEY = "nststyle"
QUANTIZATIONS = ("int8",)
# the ops of the style path that int8 runs: convolutions, and the ReLUs and max pools between them (a quantised
# ReLU folds into the convolution's output range, a max pool runs on uint8)
STYLE_PATH_OPS = ("Conv", "Relu", "MaxPool")


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


def _metadata(stylizer: Stylizer) -> dict[str, float]:
    """What an exported file records about the model's card (``ExportedStylizer`` reads it back)."""
    card = {"style_size": stylizer.style_size, **{name: getattr(stylizer, name) for name in COLOUR_CARD}}
    return {key: value for key, value in card.items() if value}


def _export(module: nn.Module, inputs: tuple, names: list[str], dynamic: dict, path: Path,
            metadata: dict | None = None) -> Path:
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; say so before it fails deep inside)
    except ImportError:
        raise StylizeError('ONNX export needs onnxscript: pip install "nststyle[export]"') from None
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(module.eval(), inputs, dynamo=True, input_names=names, output_names=["output"],
                                dynamic_shapes=dynamic, verbose=False)
    if metadata:
        program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    program.save(str(path), external_data=False)
    return path


def _graphs(stylizer: Stylizer) -> list[tuple[str, nn.Module, tuple, list[str], dict]]:
    """(file suffix, module, example inputs, input names, dynamic H/W dims) of each graph of ``stylizer``."""
    m = stylizer.multiple
    content, style = torch.rand(1, 3, 8 * m, 10 * m), torch.rand(1, 3, 64, 72)
    image = {2: _size("height", m), 3: _size("width", m)}
    if isinstance(stylizer, VariationalStylizer):
        code = torch.zeros(1, stylizer.net.style_dim)
        painting = {2: torch.export.Dim("style_height", min=16, max=8192),  # the VGG path's pools need 16
                    3: torch.export.Dim("style_width", min=16, max=8192)}
        return [("", StyleTransferGraph(stylizer), (content, style), ["content", "style"],
                 {"content": image, "style": painting}),
                ("_decode", DecodeGraph(stylizer), (content, code), ["content", "code"],
                 {"content": image, "code": None})]
    if isinstance(stylizer, InverseStylizer):
        with torch.no_grad():
            features = stylizer.encode(content)
        return [("_encoder", EncoderGraph(stylizer), (content,), ["image"], {"image": image}),
                ("_decoder", stylizer.net, (features,), ["features"],
                 {"features": {2: _size("height", 1), 3: _size("width", 1)}})]
    raise StylizeError(f"no export for a {stylizer.kind!r} model")


def export_onnx(stylizer: Stylizer, out_dir: str | Path, name: str, quantize: str | None = None) -> list[Path]:
    """Write the ONNX graph(s) of ``stylizer`` (on the CPU, float32) into ``out_dir``; returns the files.
    ``quantize="int8"`` (variational model): also ``<name>_int8.onnx``, listed last (``quantize_int8``; calibrated
    with paintings at the model's ``style_size``, 256 px when the checkpoint names none)."""
    if _check_quantize(stylizer, quantize):
        _quantization_tools()  # missing tools: say so before the export runs
    with torch.no_grad():
        files = [_export(module, inputs, names, dynamic, Path(out_dir) / f"{name}{suffix}.onnx", _metadata(stylizer))
                 for suffix, module, inputs, names, dynamic in _graphs(stylizer)]
    if quantize == "int8":
        files.append(quantize_int8(files[0], Path(out_dir) / f"{name}_int8.onnx",
                                   style_size=stylizer.style_size or 256, multiple=stylizer.multiple))
    return files


# -- int8 (static quantisation of the style path: onnxruntime's for ONNX, torchao's PT2E for AOTInductor) --------

def _check_quantize(stylizer: Stylizer, quantize: str | None) -> bool:
    """Whether to quantise; an unknown mode or a model without a style path fails here, before any export."""
    if quantize is None:
        return False
    if quantize not in QUANTIZATIONS:
        raise StylizeError(f"unknown quantize {quantize!r}: {', '.join(QUANTIZATIONS)} (or null)")
    if not isinstance(stylizer, VariationalStylizer):
        raise StylizeError(f"quantize={quantize} applies to the variational model, not to a {stylizer.kind!r} one")
    return True


def _quantization_tools():
    try:
        import onnx
        import onnxruntime.quantization as quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise StylizeError("quantize=int8 needs onnxruntime's quantisation tools (onnxruntime.quantization, "
                           'onnx): pip install "nststyle[export]"') from None
    return onnx, quantization, quant_pre_process


def calibration_inputs(count: int = 12, content_size: int = 384, style_size: int = 192,
                       multiple: int = 8) -> list[dict]:
    """``count`` (content, style) pairs from the embedded sample set (crops of scikit-image's photos, the
    procedural paintings; every kind of each when ``count`` >= 10), at the working sizes, as numpy inputs."""
    def tensor(image, size, multiple=1):
        return resize_max(pil_to_tensor(image.convert("RGB")).float().div(255), size, multiple)[None].numpy()

    return [{"content": tensor(photo, content_size, multiple), "style": tensor(painting, style_size)}
            for (_, photo), (_, painting) in zip(content_images(count, seed=0), style_images(count, seed=1))]


def style_path_nodes(model, op_types: tuple[str, ...] = STYLE_PATH_OPS, source: str = "style") -> list[str]:
    """Names of the nodes of ``op_types`` that depend on the graph input ``source`` alone (not on the content)."""
    reaches = {graph_input.name: {graph_input.name} for graph_input in model.graph.input}
    nodes = []
    for node in model.graph.node:  # ONNX keeps nodes in topological order
        reach = set().union(*(reaches.get(name, set()) for name in node.input))
        reaches.update((name, reach) for name in node.output)
        if reach == {source} and node.op_type in op_types:
            nodes.append(node.name)
    return nodes


class _Calibration:
    """onnxruntime's ``CalibrationDataReader`` protocol over a list of input dicts."""

    def __init__(self, inputs: list[dict]):
        self.inputs = iter(inputs)

    def get_next(self):
        return next(self.inputs, None)


def quantize_int8(fp32_path: str | Path, out_path: str | Path, style_size: int = 192, content_size: int = 384,
                  count: int = 12, multiple: int = 8) -> Path:
    """Write the int8 version of the exported variational graph ``fp32_path`` (``<name>.onnx``) to ``out_path``:
    static QDQ quantisation with per-channel int8 weights and uint8 activations of its style path (see the
    module's docstring), calibrated (min/max) on ``count`` pairs of the sample set with photos at
    ``content_size`` and paintings at ``style_size`` (the model's). The metadata (``style_size``) is kept."""
    onnx, quantization, quant_pre_process = _quantization_tools()
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="nststyle-int8-") as folder:
        prepared, quantized = Path(folder, "prepared.onnx"), Path(folder, "int8.onnx")
        # onnxruntime's recommended pre-processing: onnx shape inference and its basic graph optimisations
        # (constant folding); its symbolic shape inference fails on this graph's dynamic sizes (and then leaves
        # temporary files in the working directory), so it is skipped
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        nodes = style_path_nodes(model)
        if not nodes:
            raise StylizeError(f"{fp32_path} has no style-path convolutions to quantise")
        # min/max calibration holds the calibrated ops' outputs of all ``count`` runs at once (the export peaks at
        # ~1.6 GB with 12 x 384 px); onnxruntime 1.32's CalibMaxIntermediateOutputs, meant to bound it, drops data
        quantization.quantize_static(
            str(prepared), str(quantized), _Calibration(calibration_inputs(count, content_size, style_size, multiple)),
            quant_format=quantization.QuantFormat.QDQ, activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8, per_channel=True, op_types_to_quantize=list(STYLE_PATH_OPS),
            nodes_to_quantize=nodes, calibrate_method=quantization.CalibrationMethod.MinMax)
        model = onnx.load(str(quantized))
    original = {prop.key: prop.value for prop in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
    onnx.helper.set_model_props(model, original)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, out_path)
    return out_path


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
        traced.save(str(tmp), _extra_files={METADATA_KEY: json.dumps(_metadata(stylizer))})
        os.replace(tmp, path)
        files.append(path)
    return files


class Autocast(nn.Module):
    """``module`` under bfloat16 autocast (``enabled``), float32 in and out: what ``precision=bf16`` runs in
    PyTorch."""

    def __init__(self, module: nn.Module, enabled: bool = True):
        super().__init__()
        self.module, self.enabled = module, enabled

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.enabled):
            output = self.module(*inputs)
        return output.float()


def _pt2e_tools():
    # torchao's import logs a deprecation of torch's pytree about one of its enums, on every run
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        from torchao.quantization.pt2e.inductor_passes import x86 as _  # noqa: F401  (Inductor's int8 fusions)
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError:
        raise StylizeError('quantize=int8 with export_format=aoti needs torchao (PT2E quantisation): '
                           'pip install "nststyle[export]"') from None
    finally:
        pytree_log.setLevel(level)
    return prepare_pt2e, convert_pt2e, allow_exported_model_train_eval, x86


def quantize_style_path_pt2e(module: nn.Module, inputs: tuple, dynamic: dict, calibration: list[dict]
                             ) -> torch.fx.GraphModule:
    """``module`` (the (content, style) graph) with its style path in int8, for Inductor: torchao's PT2E static
    quantisation with the X86 Inductor quantiser (per-channel int8 weights, uint8 activations, histogram
    calibration) of the VGG-19 under ``net.style_encoder.vgg`` only, calibrated on ``calibration``
    (``calibration_inputs``). Inductor runs the quantised convolutions as oneDNN int8 kernels (VNNI), the rest as
    before; the content path stays in float (see the module's docstring)."""
    prepare_pt2e, convert_pt2e, allow_train_eval, x86 = _pt2e_tools()
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_module_name_qconfig("net.style_encoder.vgg", x86.get_default_x86_inductor_quantization_config())
    # under no_grad: with gradients on, the style encoder's own no_grad block exports as a submodule of its own,
    # without the module names that the quantiser matches (and nothing would be quantised)
    with torch.no_grad():
        graph = torch.export.export(module.eval(), inputs, dynamic_shapes=dynamic).module()
        prepared = prepare_pt2e(graph, quantizer)
        for pair in calibration:
            prepared(*(torch.from_numpy(pair[name]) for name in dynamic))
        quantized = convert_pt2e(prepared)
    if not any("quantize" in str(node.target) for node in quantized.graph.nodes):
        raise StylizeError("the (content, style) graph has no style-path convolutions to quantise")
    # the float32 export's dtype checks (of the statistics' .float()) would refuse the bfloat16 tensors of the
    # autocast export that compiles it; the kernels need none of them
    for node in list(quantized.graph.nodes):
        if node.target == torch.ops.aten._assert_tensor_metadata.default:
            quantized.graph.erase_node(node)
    quantized.recompile()
    allow_train_eval(quantized)  # export_aoti calls .eval(), which PT2E graphs refuse by default
    return quantized


def export_aoti(stylizer: Stylizer, out_dir: str | Path, name: str, precision: str = "auto",
                quantize: str | None = None) -> list[Path]:
    """Write the same graphs compiled ahead of time (AOTInductor: ``torch.export`` + Inductor's C++ kernels)
    as ``<name>.pt2`` packages, which torch alone runs (``torch._inductor.aoti_load_package``: no nststyle, no
    Python model code), at any image size. ``precision``: ``bf16`` compiles the graphs under bfloat16 autocast
    (``auto``: where this CPU runs bfloat16 natively, ``swap.bf16_is_fast``), ``fp32`` as they are.
    ``quantize="int8"`` (variational model): also ``<name>_int8.pt2``, listed last, the (content, style) graph with
    its style path in int8 (``quantize_style_path_pt2e``, calibrated on the sample set; needs torchao to export,
    torch alone to run). The kernels are built for the exporting machine's CPU (its vector instructions) and need a
    C++ compiler there: export on the machine, or the kind of machine, that runs the package. A minute or two per
    graph on one thread."""
    if precision not in PRECISIONS:
        raise StylizeError(f"unknown precision {precision!r}: {' or '.join(PRECISIONS)}")
    graphs = _graphs(stylizer)
    if _check_quantize(stylizer, quantize):
        suffix, module, inputs, names, dynamic = graphs[0]
        calibration = calibration_inputs(style_size=stylizer.style_size or 256, multiple=stylizer.multiple)
        graphs.append(("_int8", quantize_style_path_pt2e(module, inputs, dynamic, calibration), inputs, names, dynamic))
    quiet_cpp_extension()
    bf16 = precision == "bf16" or (precision == "auto" and bf16_is_fast(torch.device("cpu")))
    metadata = json.dumps(_metadata(stylizer) | {"precision": "bf16" if bf16 else "fp32",
                                                 "cpu_flags": compiled_cpu_flags()})
    files = []
    for suffix, module, inputs, _, dynamic in graphs:
        path = Path(out_dir) / f"{name}{suffix}.pt2"
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            program = torch.export.export(Autocast(module, enabled=bf16).eval(), inputs,
                                          dynamic_shapes={"inputs": tuple(dynamic.values())})
            # freezing: the weights as constants, prepacked for oneDNN's kernels (0.96x the time at 384 px)
            compiled = torch._inductor.aot_compile(program.module(), inputs,
                                                   options={"aot_inductor.package": True, "freezing": True})
        tmp = path.with_name(f".{path.stem}.tmp.pt2")
        package_pt2(tmp, aoti_files=compiled, extra_files={METADATA_KEY: metadata})
        os.replace(tmp, path)
        files.append(path)
    return files


EXPORTERS = {"onnx": export_onnx, "torchscript": export_torchscript, "aoti": export_aoti}


# -- readers: exported files run as a Stylizer ------------------------------------------------------

class ExportedStylizer(Stylizer):
    """A model exported by ``nststyle.export``: ``<name>.onnx`` run with onnxruntime, ``<name>.ts``
    (TorchScript) or ``<name>.pt2`` (AOTInductor) run with torch alone. The variational model is one graph
    (content, style) -> image; the inverse network is ``<name>_encoder`` + ``<name>_decoder`` with the style swap
    run in PyTorch between."""

    def __init__(self, path: str | Path, multiple: int = 8, patch_size: int = 3, stride: int = 1,
                 swap_mode: str | None = None):
        super().__init__(torch.device("cpu"))
        path = Path(path)
        self.kind = path.suffix[1:]
        torch_runners = {".ts": _torchscript_runner, ".pt2": _aoti_runner}
        load = self._onnx_runner() if path.suffix == ".onnx" else torch_runners[path.suffix]
        self.multiple, self.patch_size, self.stride = multiple, patch_size, stride
        self.swap_mode = check_swap_mode(swap_mode)
        if path.stem.endswith("_encoder"):
            self.encoder, metadata = load(path)
            self.decoder, _ = load(path.with_name(path.name.replace("_encoder", "_decoder")))
            self.graph = None
        else:
            self.graph, metadata = load(path)
        # the scale the model reads paintings at and its colour shift, as its checkpoint said (files exported
        # before they were recorded: None, 0)
        self.style_size = metadata.get("style_size")
        self.read_colour_card(metadata)

    @staticmethod
    def _onnx_runner():
        try:
            import onnxruntime  # an optional dependency (nststyle[export]): imported where it is needed
        except ImportError:
            raise StylizeError('running an ONNX model needs onnxruntime: pip install "nststyle[export]"') from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()

        def load(file: Path):
            graph = onnxruntime.InferenceSession(str(file), options)
            metadata = json.loads(graph.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}"))
            return (lambda **inputs: torch.from_numpy(graph.run(None, {k: v.numpy() for k, v in inputs.items()})[0]),
                    metadata)
        return load

    def stylize(self, content, style, alpha=1.0):
        if alpha != 1.0:
            raise StylizeError("an exported model stylises at alpha=1 only")
        style = self.style_input(style)
        if self.graph is not None:
            return self.graph(content=content, style=style)
        swapped = style_swap(self.encoder(image=content), self.encoder(image=style), self.patch_size, self.stride,
                             mode=self.swap_mode)
        return self.decoder(features=swapped)


def quiet_cpp_extension() -> None:
    """Silence ``torch.utils.cpp_extension``'s "No CUDA runtime is found" warning, which AOTInductor's import of it
    prints on every CPU machine with a CUDA_HOME; nothing of AOTInductor's CPU path uses CUDA."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


# Inductor's -m options whose /proc/cpuinfo flag is spelt otherwise (the rest: "-" becomes "_")
CPUINFO_NAMES = {"avx512bf16": "avx512_bf16", "avx512vnni": "avx512_vnni", "avx512fp16": "avx512_fp16"}


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags as Linux names them (``/proc/cpuinfo``); None where they cannot be read."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), None)
    return set(flags) if flags is not None else None


def compiled_cpu_flags() -> list[str]:
    """The CPU features Inductor builds this machine's C++ kernels for (its ``-m`` options: the vector ISA,
    AVX512-BF16 or VNNI where present), as ``/proc/cpuinfo`` names them."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa  # Inductor's import is slow: only where AOTI is used

    options = (flag[2:] for flag in pick_vec_isa().build_arch_flags().split() if flag.startswith("-m"))
    return sorted({CPUINFO_NAMES.get(option, option.replace("-", "_")) for option in options if "=" not in option})


def _aoti_runner(file: Path):
    quiet_cpp_extension()
    with zipfile.ZipFile(file) as archive:  # the card, an extra file of the package (nststyle.export.export_aoti)
        cards = [name for name in archive.namelist() if name.endswith(f"/extra/{METADATA_KEY}")]
        metadata = json.loads(archive.read(cards[0])) if cards else {}
    # kernels built for instructions this CPU lacks would end the process (SIGILL) at the first image
    here = cpu_flags()
    missing = [] if here is None else [flag for flag in metadata.get("cpu_flags", []) if flag not in here]
    if missing:
        raise StylizeError(f"{file} was compiled for a CPU with {', '.join(missing)}, which this one lacks: export it "
                           "again on this machine (infer.py mode=export export_format=aoti)")
    module = torch._inductor.aoti_load_package(str(file))

    @torch.no_grad()
    def run(**inputs):
        return module(*inputs.values())
    return run, metadata


def _torchscript_runner(file: Path):
    extra = {METADATA_KEY: ""}
    with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; the file still runs
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(file), map_location="cpu", _extra_files=extra).eval()

    @torch.no_grad()
    def run(**inputs):
        return module(*inputs.values())
    return run, json.loads(extra[METADATA_KEY] or "{}")
