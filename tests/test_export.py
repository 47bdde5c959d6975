"""Export (infer.py mode=export): ONNX graphs that onnxruntime runs, and TorchScript files that torch alone
runs, at any image size, like the PyTorch model."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data as skdata

from nststyle.export import EXPORTERS
from nststyle.stylize import ExportedStylizer, load_stylizer

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = {"onnx": ".onnx", "torchscript": ".ts"}


@pytest.fixture(params=["onnx", "torchscript"])
def export_format(request):
    if request.param == "onnx":
        pytest.importorskip("onnxscript")
        pytest.importorskip("onnxruntime")
    return request.param


def test_variational_graphs_match_pytorch_at_any_size(tiny_checkpoint, tmp_path, export_format):
    stylizer = load_stylizer(tiny_checkpoint, "cpu")
    files = EXPORTERS[export_format](stylizer, tmp_path, "tiny")
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
    else:
        output = torch.jit.load(str(files[1]))(content, code)
    torch.testing.assert_close(output, stylizer.decode(content, code), atol=1e-3, rtol=0)


def test_inverse_network_two_stage_pipeline_matches_pytorch(inverse_checkpoint, tmp_path, export_format):
    stylizer = load_stylizer(inverse_checkpoint, "cpu")
    files = EXPORTERS[export_format](stylizer, tmp_path, "inv")
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
