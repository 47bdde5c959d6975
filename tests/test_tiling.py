"""Large images in overlapping, blended tiles: the same pixels as one pass wherever a model sees no
further than the overlap, the style summarised once, and infer.py end to end."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nststyle.stylize import load_stylizer
from nststyle.tiling import ramp, stylize_tiled, tile_starts

ROOT = Path(__file__).resolve().parents[1]


def test_tiles_cover_the_image_and_end_flush():
    assert tile_starts(100, 100, 80) == [0]
    assert tile_starts(300, 100, 80) == [0, 80, 160, 200]
    assert tile_starts(64, 100, 80) == [0]
    weights = ramp(10, 3)
    assert weights.min() > 0 and weights.max() == 1 and torch.equal(weights, weights.flip(0))


def test_a_pointwise_function_comes_out_exactly_as_in_one_pass():
    image = torch.rand(1, 3, 70, 130)
    tiled = stylize_tiled(lambda tile: 1 - tile, image, tile=32, overlap=8, progress=False)
    torch.testing.assert_close(tiled, 1 - image)


def test_a_local_function_matches_one_pass_away_from_the_image_border():
    # a 5x5 blur sees 2 px: a tile's own border pixels are wrong (zero padding), the ramps weight them
    # down, and an overlap of 16 leaves the blend close to the one-pass result
    image = torch.rand(1, 3, 96, 96)
    kernel = torch.full((3, 1, 5, 5), 1 / 25)
    blur = lambda tile: F.conv2d(tile, kernel, padding=2, groups=3)  # noqa: E731
    tiled = stylize_tiled(blur, image, tile=48, overlap=16, progress=False)
    whole = blur(image)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    assert (tiled - whole)[inner].abs().max() < 0.05
    assert (tiled - whole)[inner].abs().mean() < 0.005


def test_bad_tiles_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        stylize_tiled(lambda t: t, torch.rand(1, 3, 64, 64), tile=32, overlap=32)
    with pytest.raises(ValueError, match="one 1x3xHxW image"):
        stylize_tiled(lambda t: t, torch.rand(2, 3, 64, 64), tile=32, overlap=8)


@pytest.mark.parametrize("kind", ["variational", "inverse"])
def test_models_summarise_the_style_once_and_tile_large_images(kind, tiny_checkpoint, inverse_checkpoint):
    stylizer = load_stylizer(tiny_checkpoint if kind == "variational" else inverse_checkpoint, "cpu")
    torch.manual_seed(0)
    content, style = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 48, 48)
    one_pass = stylizer.stylize(content, style)
    torch.testing.assert_close(stylizer.styler(style)(content), one_pass)
    assert torch.equal(stylizer.stylize_large(content, style, tile=None), one_pass)
    tiled = stylizer.stylize_large(content, style, tile=48, overlap=16, progress=False)
    assert tiled.shape == content.shape and torch.isfinite(tiled).all()
    # the same model, so tiles agree with the one pass away from their borders
    assert (tiled - one_pass).abs().mean() < 0.1


def test_infer_tiles_a_photo_larger_than_the_tile_and_says_so(tiny_checkpoint, tmp_path):
    photo, painting = tmp_path / "photo.png", tmp_path / "painting.png"
    Image.fromarray((torch.rand(200, 300, 3) * 255).byte().numpy()).save(photo)
    Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy()).save(painting)
    result = subprocess.run([sys.executable, str(ROOT / "infer.py"), f"ckpt={tiny_checkpoint}", f"content={photo}",
                             f"style={painting}", f"output={tmp_path}/out.png", "max_size=null", "tile=128",
                             "tile_overlap=32", "device=cpu"], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tiles: 100%" in result.stderr  # the progress bar: 2 x 3 tiles
    with Image.open(tmp_path / "out.png") as image:
        assert image.size == (300, 200)
