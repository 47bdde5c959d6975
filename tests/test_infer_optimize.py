"""End to end: ``python infer.py method=optimize ...`` in a subprocess (tiny images, random VGG weights)."""
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parents[1]
FAST = ["max_size=32", "max_iter=2", "vgg_weights=random", "progress=false"]


def infer(*overrides):
    return subprocess.run([sys.executable, "infer.py", "method=optimize", *overrides], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    Image.fromarray(data.astronaut()).save(folder / "photo.png")
    Image.fromarray(data.coffee()).save(folder / "painting.jpg")
    return folder / "photo.png", folder / "painting.jpg"


@pytest.mark.parametrize("loss", ["bn", "swap"])
def test_optimize_writes_the_stylised_image(pair, tmp_path, loss):
    output = tmp_path / "nested" / "out.png"
    result = infer(f"loss={loss}", f"content={pair[0]}", f"style={pair[1]}", f"output={output}", *FAST)
    assert result.returncode == 0, result.stderr
    with Image.open(output) as image:
        assert image.size == (32, 32)  # astronaut is square; longer side = max_size
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {output}") and f"loss {loss}, 2 iterations" in lines[0]


def test_missing_input_is_a_one_line_error(pair, tmp_path):
    result = infer("loss=bn", f"content={tmp_path / 'nope.jpg'}", f"style={pair[1]}", f"output={tmp_path / 'o.png'}",
                   *FAST)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: image not found: {tmp_path / 'nope.jpg'}"
    assert not (tmp_path / "o.png").exists()


def test_bad_option_is_a_one_line_error(pair, tmp_path):
    result = infer("loss=bn", f"content={pair[0]}", f"style={pair[1]}", "optimizer=sgd", *FAST)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: optimizer must be 'lbfgs' or 'adam', got 'sgd'"
