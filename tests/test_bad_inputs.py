"""Every bad input to infer.py, one row each: it either works or ends in one clear line and exit status 1
(no traceback, no Hydra dump), and nothing already written is lost."""
import io
import os
import struct
import subprocess
import tarfile
import sys
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data as skdata

ROOT = Path(__file__).resolve().parents[1]
PHOTO = skdata.chelsea()[::4, ::4]  # 75 x 113


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width x height`` (PIL reads the size before decoding anything)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def exif_rotated(path: Path) -> Path:
    image = Image.fromarray(PHOTO)  # 113 wide, 75 tall; orientation 6 = shown rotated: 75 wide, 113 tall
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif)
    return path


def truncated(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(PHOTO).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def make_case(name: str, tmp: Path) -> Path:
    """The content input of each case (a file or folder in ``tmp``)."""
    photo = Image.fromarray(PHOTO)
    makers = {
        "missing": lambda p: p,
        "empty_folder": lambda p: (p.mkdir(), p)[1],
        "not_an_image": lambda p: (p.write_text("hello"), p)[1],
        "truncated_jpeg": truncated,
        "one_pixel": lambda p: (Image.new("RGB", (1, 1)).save(p), p)[1],
        "huge_20000": lambda p: png_header_only(p, 20000, 20000),
        "greyscale": lambda p: (photo.convert("L").save(p), p)[1],
        "rgba": lambda p: (photo.convert("RGBA").save(p), p)[1],
        "palette": lambda p: (photo.convert("P").save(p), p)[1],
        "cmyk": lambda p: (photo.convert("CMYK").save(p), p)[1],
        "png_16bit": lambda p: (Image.fromarray((PHOTO[..., 0].astype("uint16") * 257)).save(p), p)[1],
        "exif_rotated": exif_rotated,
    }
    suffix = {"empty_folder": "", "rgba": ".png", "palette": ".png", "png_16bit": ".png", "huge_20000": ".png",
              "one_pixel": ".png"}.get(name, ".jpg")
    return makers[name](tmp / f"{name}{suffix}")


# case -> (expected exit status, a phrase of the one error line, or None when it works)
IMAGE_CASES = {
    "missing": (1, "image not found"),
    "empty_folder": (1, "no images"),
    "not_an_image": (1, "cannot read image"),
    "truncated_jpeg": (1, "cannot read image"),
    "one_pixel": (1, "image too small"),
    "huge_20000": (1, "image too large"),
    "greyscale": (0, None),
    "rgba": (0, None),
    "palette": (0, None),
    "cmyk": (0, None),
    "png_16bit": (0, None),
    "exif_rotated": (0, None),
}


def infer(*args):
    return subprocess.run([sys.executable, str(ROOT / "infer.py"), *args], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300, cwd=ROOT)


def assert_one_line_error(result, phrase):
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def painting(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("painting") / "rocket.png"
    Image.fromarray(skdata.rocket()).resize((64, 64)).save(path)
    return path


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_bad_content_images(case, tmp_path, tiny_checkpoint, painting):
    status, phrase = IMAGE_CASES[case]
    content, output = make_case(case, tmp_path), tmp_path / "out" / "result.png"
    result = infer(f"ckpt={tiny_checkpoint}", f"content={content}", f"style={painting}", f"output={output}",
                   "max_size=64", "device=cpu")
    if phrase:
        assert_one_line_error(result, phrase)
        assert not output.exists()
        return
    assert result.returncode == 0, result.stderr
    with Image.open(output) as image:
        # EXIF orientation honoured: the portrait the viewer shows, not the landscape pixels stored
        portrait = case == "exif_rotated"
        assert (image.height > image.width) == portrait, image.size


# (arguments, phrase of the one error line); {ckpt}, {photo}, {painting}, {tmp} are filled in
COMMAND_CASES = {
    "corrupt_checkpoint": (["ckpt={tmp}/corrupt.ckpt"], "cannot read checkpoint"),
    "foreign_checkpoint": (["ckpt={tmp}/foreign.ckpt"], "not an nststyle checkpoint"),
    "unknown_mode": (["mode=paint"], "unknown mode 'paint'"),
    "unknown_method": (["method=magic"], "unknown method 'magic'"),
    "unknown_loss": (["method=optimize", "loss=bogus"], "unknown option loss=bogus: choose from bn"),
    "unknown_key": (["bogus_key=1"], "Could not override 'bogus_key'"),
    "output_in_a_file": (["output={photo}/x.png"], "cannot write"),
    "output_unknown_format": (["output={tmp}/o.xyz"], "cannot write"),
    "output_is_the_input": (["output={photo}"], "would overwrite the input"),
    "output_is_the_input_optimize": (["method=optimize", "output={photo}", "vgg_weights=random"],
                                     "would overwrite an input"),
}


@pytest.mark.parametrize("case", list(COMMAND_CASES))
def test_bad_commands(case, tmp_path, tiny_checkpoint, painting):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(PHOTO).save(photo)
    before = photo.read_bytes()
    (tmp_path / "corrupt.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    torch.save({"model": {"weight": torch.zeros(2)}}, tmp_path / "foreign.ckpt")
    args, phrase = COMMAND_CASES[case]
    fill = dict(ckpt=tiny_checkpoint, photo=photo, painting=painting, tmp=tmp_path)
    args = [arg.format(**fill) for arg in args]
    defaults = [f"ckpt={tiny_checkpoint}", f"content={photo}", f"style={painting}", f"output={tmp_path}/o.png",
                "max_size=64", "device=cpu", "max_iter=1", "progress=false"]
    given = {arg.split("=")[0] for arg in args}
    result = infer(*[arg for arg in defaults if arg.split("=")[0] not in given], *args)
    assert_one_line_error(result, phrase)
    assert photo.read_bytes() == before  # the input is never touched


def test_a_bad_file_in_a_folder_is_reported_and_the_others_are_written(tmp_path, tiny_checkpoint, painting):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(PHOTO).save(folder / "good.jpg")
    (folder / "broken.jpg").write_text("not an image")
    result = infer(f"ckpt={tiny_checkpoint}", f"content={folder}", f"style={painting}", f"output={tmp_path}/r.png",
                   "max_size=64", "device=cpu")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "1 failed: broken.jpg: cannot read image" in result.stdout
    assert (tmp_path / "r_good_rocket.png").is_file() and (tmp_path / "r_grid.jpg").is_file()


TRAIN_CASES = {
    "missing_image_folder": (["data=folders", "data.content_dir=/nonexistent", "data.style_dir=/nonexistent"],
                             "is not a folder"),
    "missing_shards": (["data.sample_dir=null", "data.content_shards=/nonexistent/c-*.tar"], "no shards match"),
    "missing_images_dir": (["experiment=shared_images_cpu", "data.images_dir=/nonexistent"], "no content folder"),
    "unreadable_shards": (["data.sample_dir=null", "data.content_shards={tmp}/bad-000000.tar",
                           "data.style_shards={tmp}/bad-000000.tar"],
                          "no readable image in the content shards (1 shards, e.g. "),
    "unknown_key": (["trainer.bogus=3"], "Could not override 'trainer.bogus'"),
    "unknown_experiment": (["experiment=nope"], "unknown option experiment=nope: choose from"),
    "more_devices_than_the_machine": (["trainer.accelerator=cpu", "trainer.devices=4096"],
                                      "trainer.devices=4096 but this machine has"),
}


# a Python process per case: two in the default run, the rest slow-marked (pytest -m slow runs them)
DEFAULT_TRAIN_CASES = ("missing_shards", "unknown_key")


@pytest.mark.parametrize("case", [case if case in DEFAULT_TRAIN_CASES else pytest.param(case, marks=pytest.mark.slow)
                                  for case in TRAIN_CASES])
def test_train_py_fails_fast_with_one_line(case, tmp_path):
    with tarfile.open(tmp_path / "bad-000000.tar", "w") as shard:  # samples that are no images
        for key in ("a", "b"):
            payload = b"not an image"
            info = tarfile.TarInfo(f"{key}.jpg")
            info.size = len(payload)
            shard.addfile(info, io.BytesIO(payload))
    args, phrase = TRAIN_CASES[case]
    args = [arg.format(tmp=tmp_path) for arg in args]
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, "logger=none",
                             f"paths.output_dir={tmp_path}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert_one_line_error(result, phrase)
    assert not list(tmp_path.rglob("*.ckpt"))
