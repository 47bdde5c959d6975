"""Export (infer.py mode=export): ONNX graphs that onnxruntime runs, and TorchScript files and AOTInductor
packages that torch alone runs, at any image size, like the PyTorch model."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data as skdata

from nststyle.export import EXPORTERS, _graphs, calibration_inputs, export_onnx, quantize_style_path_pt2e
from nststyle.images import resize_max
from nststyle import export
from nststyle.models.variational import AdaIN, VariationalStyleNet
from nststyle.stylize import ExportedStylizer, StylizeError, load_stylizer

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = {"onnx": ".onnx", "torchscript": ".ts", "aoti": ".pt2"}
# the graphs as they are, so that the exported files match float32 PyTorch (bf16: test_aoti_bf16_...)
OPTIONS = {"aoti": {"precision": "fp32"}}


# AOTInductor compiles C++ for a minute per graph: its runs are slow-marked
@pytest.fixture(params=["onnx", "torchscript", pytest.param("aoti", marks=pytest.mark.slow)])
def export_format(request):
    if request.param == "onnx":
        pytest.importorskip("onnxscript")
        pytest.importorskip("onnxruntime")
    return request.param


def test_variational_graphs_match_pytorch_at_any_size(tiny_checkpoint, tmp_path, export_format):
    stylizer = load_stylizer(tiny_checkpoint, "cpu")
    files = EXPORTERS[export_format](stylizer, tmp_path, "tiny", **OPTIONS.get(export_format, {}))
    suffix = SUFFIX[export_format]
    assert [f.name for f in files] == [f"tiny{suffix}", f"tiny_decode{suffix}"]
    exported = load_stylizer(files[0])
    assert isinstance(exported, ExportedStylizer)
    torch.manual_seed(1)
    for content_size, style_size in (((48, 64), (40, 40)), ((96, 72), (56, 88))):  # not the traced sizes
        content, style = torch.rand(1, 3, *content_size), torch.rand(1, 3, *style_size)
        torch.testing.assert_close(exported.stylize(content, style), stylizer.stylize(content, style),
                                   atol=1e-3, rtol=0)
    content, code = torch.rand(1, 3, 32, 40), torch.randn(1, stylizer.net.style_dim)
    if export_format == "onnx":
        import onnxruntime
        decode = onnxruntime.InferenceSession(str(files[1]))
        output = torch.from_numpy(decode.run(None, {"content": content.numpy(), "code": code.numpy()})[0])
    elif export_format == "aoti":
        output = torch._inductor.aoti_load_package(str(files[1]))(content, code)
    else:
        output = torch.jit.load(str(files[1]))(content, code)
    torch.testing.assert_close(output, stylizer.decode(content, code), atol=1e-3, rtol=0)


@pytest.mark.slow  # compiles C++ and, without AVX512-BF16, emulates bfloat16: minutes
def test_aoti_bf16_package_matches_pytorch_bf16(tiny_checkpoint, tmp_path):
    stylizer = load_stylizer(tiny_checkpoint, "cpu", precision="bf16", colour_match=0.4)
    files = EXPORTERS["aoti"](stylizer, tmp_path, "tiny", precision="bf16")
    exported = load_stylizer(files[0])
    assert isinstance(exported, ExportedStylizer)
    torch.manual_seed(3)
    content, style = torch.rand(1, 3, 56, 80), torch.rand(1, 3, 48, 64)  # not the traced sizes
    output, reference = exported.stylize(content, style), stylizer.stylize(content, style)
    assert output.dtype == torch.float32 and output.shape == reference.shape
    assert (output - reference).abs().mean() < 5e-3  # both in bfloat16 (8 bits of mantissa), kernels differ
    assert exported.colour_match == 0.4  # the card travels in the package


def test_aoti_package_refuses_a_cpu_without_its_instructions(tiny_checkpoint, tmp_path, monkeypatch):
    """A package's kernels use the exporting CPU's vector instructions; on a CPU without them the process would
    die (SIGILL) at the first image, so loading says so in one line instead."""
    flags = export.cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    needed = export.compiled_cpu_flags()
    assert needed and set(needed) <= flags  # what this machine compiles for, it has
    file = tmp_path / "tiny.pt2"
    with zipfile.ZipFile(file, "w") as archive:  # only the card is read before the check
        archive.writestr(f"tiny/extra/{export.METADATA_KEY}", json.dumps({"cpu_flags": needed}))
    monkeypatch.setattr(export, "cpu_flags", lambda: flags - {needed[0]})
    with pytest.raises(StylizeError, match=f"compiled for a CPU with {needed[0]}, which this one lacks") as error:
        load_stylizer(file)
    assert "\n" not in str(error.value)


def test_inverse_network_two_stage_pipeline_matches_pytorch(inverse_checkpoint, tmp_path, export_format):
    stylizer = load_stylizer(inverse_checkpoint, "cpu")
    files = EXPORTERS[export_format](stylizer, tmp_path, "inv", **OPTIONS.get(export_format, {}))
    suffix = SUFFIX[export_format]
    assert [f.name for f in files] == [f"inv_encoder{suffix}", f"inv_decoder{suffix}"]
    exported = load_stylizer(files[0])
    torch.manual_seed(2)
    content, style = torch.rand(1, 3, 40, 56), torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(exported.stylize(content, style), stylizer.stylize(content, style), atol=1e-3, rtol=0)


def test_infer_py_exports_and_runs_the_exported_model(tiny_checkpoint, tmp_path, export_format):
    photo, painting = tmp_path / "photo.png", tmp_path / "painting.png"
    Image.fromarray(skdata.chelsea()).resize((64, 48)).save(photo)
    Image.fromarray(skdata.rocket()).resize((48, 48)).save(painting)
    run = lambda *args: subprocess.run([sys.executable, "infer.py", *args], cwd=ROOT, capture_output=True,  # noqa: E731
                                       text=True, timeout=600)
    result = run("mode=export", f"ckpt={tiny_checkpoint}", f"export_dir={tmp_path / 'exported'}",
                 f"export_format={export_format}")
    assert result.returncode == 0, result.stderr
    model = tmp_path / "exported" / f"{tiny_checkpoint.stem}{SUFFIX[export_format]}"
    assert model.is_file()
    result = run(f"ckpt={model}", f"content={photo}", f"style={painting}", f"output={tmp_path / 'out.png'}")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out.png") as image:
        assert image.size == (64, 48)


# -- int8 (quantize="int8": the style path in int8, onnxruntime static quantisation) ----------------------------

# the tiny net with the shipped model's kind of style encoder (VGG-19 to relu4_1, random weights: the part that
# int8 quantises, ~3.5 M weights), padding and RGB kernel
TINY_VGG_NET = dict(style_dim=6, width=8, max_width=16, downsamplings=2, bottleneck_blocks=1, mapping_layers=1,
                    mapping_hidden=16, style_encoder="vgg", style_vgg_weights="random", padding="zeros", rgb_kernel=3)


@pytest.fixture(scope="module")
def tiny_vgg_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = VariationalStyleNet(**TINY_VGG_NET)
    for module in net.modules():
        if isinstance(module, AdaIN):
            torch.nn.init.normal_(module.to_stats.weight, std=0.5)
    torch.nn.init.normal_(net.style_encoder.head[-1].weight, std=0.5)  # codes of order 1: the style matters
    path = tmp_path_factory.mktemp("vgg") / "tiny_vgg.ckpt"
    torch.save({"state_dict": {f"net.{key}": value for key, value in net.state_dict().items()},
                "nststyle": {"kind": "variational", "net": TINY_VGG_NET, "vgg_weights": "random", "style_size": 64,
                             "colour_shift": 0.5, "colour_match": 0.25}},
               path)
    return path


def test_int8_export_runs_is_smaller_and_close_to_float32(tiny_vgg_checkpoint, tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime.quantization", reason="int8 needs onnxruntime's quantisation tools")
    onnx = pytest.importorskip("onnx")
    stylizer = load_stylizer(tiny_vgg_checkpoint, "cpu")
    files = export_onnx(stylizer, tmp_path, "tiny", quantize="int8")
    assert [f.name for f in files] == ["tiny.onnx", "tiny_decode.onnx", "tiny_int8.onnx"]
    fp32, int8 = load_stylizer(files[0]), load_stylizer(files[2])
    assert isinstance(int8, ExportedStylizer) and int8.style_size == fp32.style_size == 64  # the card travels
    assert int8.colour_shift == fp32.colour_shift == 0.5 and int8.colour_match == fp32.colour_match == 0.25
    assert files[2].stat().st_size < 0.5 * files[0].stat().st_size  # the VGG weights in int8: ~1/3 here
    # only the style path is quantised: every convolution that reads int8 weights belongs to the style encoder
    graph = onnx.load(str(files[2])).graph
    dequantized = {output for node in graph.node if node.op_type == "DequantizeLinear" for output in node.output}
    int8_convs = [node for node in graph.node if node.op_type == "Conv" and node.input[1] in dequantized]
    assert len(int8_convs) == 9  # VGG-19's convolutions up to relu4_1
    assert all(conv.input[1].startswith("net.style_encoder.") for conv in int8_convs), [c.input[1] for c in int8_convs]
    # outputs in [0, 1]: the shipped model's int8 graph is 0.004 from its float32 graph on the sample set at 384 px
    # (0.05 with every convolution in int8); 0.01 is ~2.5 grey levels of 255 on average
    from skimage import data as skdata
    photo = resize_max(torch.from_numpy(skdata.coffee().copy()).permute(2, 0, 1).float().div(255), 128, 8)[None]
    painting = resize_max(torch.from_numpy(skdata.rocket().copy()).permute(2, 0, 1).float().div(255), 64)[None]
    expected, output = fp32.stylize(photo, painting), int8.stylize(photo, painting)
    assert output.shape == expected.shape == photo.shape
    assert (output - expected).abs().mean() < 0.01


def _sample_pair(content_size: int = 128, style_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    photo = resize_max(torch.from_numpy(skdata.coffee().copy()).permute(2, 0, 1).float().div(255), content_size, 8)
    painting = resize_max(torch.from_numpy(skdata.rocket().copy()).permute(2, 0, 1).float().div(255), style_size)
    return photo[None], painting[None]


def test_pt2e_int8_quantises_the_style_path_alone(tiny_vgg_checkpoint):
    """``export_format=aoti quantize=int8``: torchao's PT2E quantisation of the (content, style) graph puts int8
    weights on VGG-19's nine convolutions to relu4_1 and on nothing of the content encoder or the decoder."""
    pytest.importorskip("torchao")
    stylizer = load_stylizer(tiny_vgg_checkpoint, "cpu")
    _, module, inputs, _, dynamic = _graphs(stylizer)[0]
    calibration = calibration_inputs(4, content_size=96, style_size=64, multiple=stylizer.multiple)
    quantized = quantize_style_path_pt2e(module, inputs, dynamic, calibration)
    convolutions = [node for node in quantized.graph.nodes if node.target == torch.ops.aten.conv2d.default]
    int8 = [node for node in convolutions if "dequantize" in str(node.args[1].target)]
    assert len(int8) == 9 and len(convolutions) > 9 + 8  # the content encoder's and decoder's stay float
    for node in int8:
        assert next(reversed(node.meta["nn_module_stack"].values()))[0].startswith("net.style_encoder.vgg")
    photo, painting = _sample_pair()
    with torch.no_grad():
        expected, output = module(photo, painting), quantized(photo, painting)
    assert output.shape == expected.shape == photo.shape
    assert 0 < (output - expected).abs().mean() < 0.01  # quantised (not the float graph), and close to it


@pytest.mark.slow
def test_aoti_int8_package_runs_with_torch_alone(tiny_vgg_checkpoint, tmp_path):
    pytest.importorskip("torchao")
    stylizer = load_stylizer(tiny_vgg_checkpoint, "cpu")
    files = EXPORTERS["aoti"](stylizer, tmp_path, "tiny", precision="fp32", quantize="int8")
    assert [f.name for f in files] == ["tiny.pt2", "tiny_decode.pt2", "tiny_int8.pt2"]
    assert files[2].stat().st_size < 0.5 * files[0].stat().st_size  # the VGG weights in int8
    exported = load_stylizer(files[2])
    assert exported.style_size == 64 and exported.colour_shift == 0.5 and exported.colour_match == 0.25
    photo, painting = _sample_pair()
    torch.save((photo, painting), tmp_path / "pair.pt")
    # a process that never imports torchao (nor nststyle) runs the package
    script = (f"import sys, torch; package = torch._inductor.aoti_load_package({str(files[2])!r}); "
              f"pair = torch.load({str(tmp_path / 'pair.pt')!r}); torch.save(package(*pair), {str(tmp_path / 'out.pt')!r}); "
              "assert not [name for name in sys.modules if name.startswith(('torchao', 'nststyle'))]")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    output = torch.load(tmp_path / "out.pt")
    expected = load_stylizer(files[0]).graph(content=photo, style=painting)
    assert output.shape == photo.shape and 0 < (output - expected).abs().mean() < 0.01


def test_int8_options_fail_in_one_line(tiny_checkpoint, inverse_checkpoint, tmp_path, monkeypatch):
    with pytest.raises(StylizeError, match="unknown quantize 'int4'"):
        export_onnx(load_stylizer(tiny_checkpoint, "cpu"), tmp_path, "tiny", quantize="int4")
    with pytest.raises(StylizeError, match="applies to the variational model"):
        export_onnx(load_stylizer(inverse_checkpoint, "cpu"), tmp_path, "inv", quantize="int8")
    for module in ("onnxruntime.quantization", "onnxruntime.quantization.shape_inference"):
        monkeypatch.setitem(sys.modules, module, None)  # as if onnxruntime came without them
    with pytest.raises(StylizeError, match="quantisation tools") as error:
        export_onnx(load_stylizer(tiny_checkpoint, "cpu"), tmp_path, "tiny", quantize="int8")
    assert "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())  # each fails before writing anything
    result = subprocess.run([sys.executable, "infer.py", "mode=export", f"ckpt={tiny_checkpoint}", "quantize=int8",
                             "export_format=torchscript", f"export_dir={tmp_path}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1 and result.stderr.strip() == ("error: quantize=int8 applies to export_format=onnx "
                                                                 "or aoti")
    with pytest.raises(StylizeError, match="applies to the variational model"):
        EXPORTERS["aoti"](load_stylizer(inverse_checkpoint, "cpu"), tmp_path, "inv", quantize="int8")
    for module in ["torchao", *(name for name in sys.modules if name.startswith("torchao."))]:
        monkeypatch.setitem(sys.modules, module, None)  # as if torchao were not installed
    with pytest.raises(StylizeError, match="needs torchao") as error:
        EXPORTERS["aoti"](load_stylizer(tiny_checkpoint, "cpu"), tmp_path, "tiny", quantize="int8")
    assert "\n" not in str(error.value)
    with pytest.raises(StylizeError, match="unknown precision 'fp16'"):
        EXPORTERS["aoti"](load_stylizer(tiny_checkpoint, "cpu"), tmp_path, "tiny", precision="fp16")
    result = subprocess.run([sys.executable, "infer.py", "mode=export", f"ckpt={tiny_checkpoint}", "precision=bf16",
                             f"export_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "applies to export_format=aoti" in result.stderr
    assert not list(tmp_path.iterdir())
