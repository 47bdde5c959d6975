"""Shards (make_shards), the sample set, the streams of nststyle.data and the DataModule."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from nststyle import shards as shards_module
from nststyle.data import Epochs, ShardStream, expand_shards, partition_shards
from nststyle.shards import ShardError, make_shards

ROOT = Path(__file__).resolve().parents[1]


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth, distinct RGB test image (gradients + a seed-dependent colour)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = rng.uniform(0.2, 0.8, 3)
    rgb = np.stack([base[0] + 0.3 * x, base[1] + 0.3 * y, base[2] - 0.2 * x * y], -1)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def read_shards(pattern: str) -> list[dict]:
    dataset = wds.WebDataset(pattern, shardshuffle=False, empty_check=False)
    return [dict(s, json=json.loads(s["json"]), image=Image.open(io.BytesIO(s["jpg"]))) for s in dataset]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- make_shards

def test_round_trip_keeps_images_and_metadata(tmp_path):
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    sizes = [(160, 100), (90, 120), (70, 70), (200, 140), (80, 96)]
    for i, (w, h) in enumerate(sizes):
        photo(w, h, i).save(folder / f"img{i}.png")
    manifest = make_shards([tmp_path / "in"], tmp_path / "out", prefix="content", size=96, shard_count=2, workers=0,
                           progress=False)

    assert manifest["complete"] and manifest["samples"] == 5 and manifest["skipped"] == []
    assert [s["name"] for s in manifest["shards"]] == [f"content-00000{i}.tar" for i in range(3)]
    assert [s["count"] for s in manifest["shards"]] == [2, 2, 1]
    samples = read_shards(str(tmp_path / "out" / "content-{000000..000002}.tar"))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(5)]
    for i, sample in enumerate(samples):  # sorted input order: img0 .. img4
        source = folder / f"img{i}.png"
        meta = sample["json"]
        assert meta["source"] == str(source)
        assert meta["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert meta["original_size"] == list(sizes[i])
        w, h = sizes[i]
        expected = (w, h) if min(w, h) <= 96 else (round(w * 96 / min(w, h)), round(h * 96 / min(w, h)))
        assert sample["image"].size == expected == tuple(meta["size"])  # downscaled, never upscaled
        stored = np.asarray(sample["image"].convert("RGB"), np.float32)
        original = np.asarray(photo(w, h, i).resize(expected, Image.Resampling.LANCZOS), np.float32)
        assert np.abs(stored - original).mean() < 3  # JPEG q95 of the same picture


def write_bad_folder(folder: Path) -> dict[str, str]:
    """Every kind of trouble; returns {file name: expected reason prefix} for the ones to skip."""
    folder.mkdir()
    photo(120, 90, 0).save(folder / "good.jpg", quality=90)
    (folder / "good_copy.jpg").write_bytes((folder / "good.jpg").read_bytes())
    full = io.BytesIO()
    photo(128, 128, 1).save(full, "JPEG")
    (folder / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (folder / "notes.jpg").write_text("this is not an image\n")
    photo(100, 80, 2).convert("L").save(folder / "grey.png")
    photo(100, 80, 3).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    rgba = photo(100, 80, 4).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(100) >= 50, (80, 1)).astype(np.uint8) * 255))  # left half clear
    rgba.save(folder / "rgba.png")
    photo(100, 80, 5).convert("CMYK").save(folder / "cmyk.jpg")
    ramp = (np.tile(np.linspace(0, 65535, 100), (80, 1))).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "sixteen.png")  # mode I;16
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    photo(120, 80, 6).save(folder / "rotated.jpg", exif=exif)
    photo(8, 8, 7).save(folder / "tiny.png")
    photo(1024, 768, 8).save(folder / "big.jpg", quality=80)  # decoded at reduced scale (draft)
    photo(1040, 800, 9).save(folder / "huge.png")  # over max_pixels below
    return {"good_copy.jpg": "duplicate of", "truncated.jpg": "corrupt", "notes.jpg": "not an image",
            "tiny.png": "too small", "huge.png": "too large"}


def test_bad_files_are_converted_or_skipped_with_reasons(tmp_path, monkeypatch):
    expected_skips = write_bad_folder(tmp_path / "mess")
    # a tight decompression-bomb limit: we must not depend on PIL's guard (big.jpg exceeds it)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    manifest = make_shards([tmp_path / "mess"], tmp_path / "out", size=64, max_pixels=1024 * 768, workers=0,
                           progress=False)

    skipped = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == set(expected_skips)
    for name, reason in expected_skips.items():
        assert skipped[name].startswith(reason), (name, skipped[name])
    assert manifest["duplicates"] == 1 and skipped["good_copy.jpg"].endswith("good.jpg")
    saved = json.loads((tmp_path / "out" / "content-manifest.json").read_text())
    assert saved["skipped"] == manifest["skipped"]

    samples = {Path(s["json"]["source"]).name: s for s in read_shards(str(tmp_path / "out" / "content-000000.tar"))}
    assert set(samples) == {"good.jpg", "grey.png", "palette.png", "rgba.png", "cmyk.jpg", "sixteen.png",
                            "rotated.jpg", "big.jpg"}
    assert manifest["samples"] == len(samples)
    for name, sample in samples.items():
        assert sample["image"].mode == "RGB" and min(sample["image"].size) == 64, name
    assert samples["rotated.jpg"]["image"].size == (64, 96)  # EXIF orientation applied: portrait
    assert samples["big.jpg"]["json"]["original_size"] == [1024, 768]
    sixteen = np.asarray(samples["sixteen.png"]["image"], np.float32)
    assert abs(sixteen.mean() - 127.5) < 6 and sixteen[:, -1].mean() > 240  # rescaled, not clipped to white
    rgba = np.asarray(samples["rgba.png"]["image"], np.float32)
    assert rgba[:, :25].min() > 245  # transparent half composited on white


def test_rerun_resumes_after_last_finished_shard(tmp_path, monkeypatch):
    for i in range(7):
        photo(80, 70, i).save(tmp_path / f"{i}.png")
    reference = make_shards([tmp_path], tmp_path / "clean", shard_count=2, workers=0, progress=False)

    real_encode = shards_module.encode_file
    calls = []

    def crash_on_fifth(path, options):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_encode(path, options)

    monkeypatch.setattr(shards_module, "encode_file", crash_on_fifth)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        make_shards([tmp_path], out, shard_count=2, workers=0, progress=False)
    interrupted = json.loads((out / "content-manifest.json").read_text())
    assert not interrupted["complete"] and [s["name"] for s in interrupted["shards"]] == [
        "content-000000.tar", "content-000001.tar"]
    assert sorted(p.name for p in out.glob("*.tmp")) == []  # shard 2 held only input 4, which crashed
    finished = {name: os.stat(out / name).st_mtime_ns for name in ("content-000000.tar", "content-000001.tar")}

    calls.clear()
    manifest = make_shards([tmp_path], out, shard_count=2, workers=0, progress=False)
    assert [Path(p).name for p in calls] == ["4.png", "5.png", "6.png"]  # only what was not finished
    assert {name: os.stat(out / name).st_mtime_ns for name in finished} == finished
    assert manifest["samples"] == reference["samples"] == 7 and manifest["shards"] == reference["shards"]
    for shard in reference["shards"]:
        assert (out / shard["name"]).read_bytes() == (tmp_path / "clean" / shard["name"]).read_bytes()

    calls.clear()
    assert make_shards([tmp_path], out, shard_count=2, workers=0, progress=False)["complete"] and calls == []
    with pytest.raises(ShardError, match="cannot be resumed"):
        make_shards([tmp_path], out, shard_count=3, workers=0, progress=False)


def test_parallel_workers_give_the_same_shards(tmp_path):
    for i in range(6):
        photo(90, 70, i).save(tmp_path / f"{i}.png")
    (tmp_path / "5.png").write_bytes(b"junk")
    serial = make_shards([tmp_path], tmp_path / "serial", shard_count=4, workers=0, progress=False)
    parallel = make_shards([str(tmp_path / "*.png")], tmp_path / "parallel", shard_count=4, workers=2,
                           progress=False)
    assert serial["shards"] == parallel["shards"] and serial["skipped"] == parallel["skipped"]
    for shard in serial["shards"]:
        assert (tmp_path / "serial" / shard["name"]).read_bytes() == (tmp_path / "parallel" / shard["name"]).read_bytes()


def test_file_lists_and_cli(tmp_path, capsys):
    for i in range(3):
        photo(80, 80, i).save(tmp_path / f"{i}.png")
    (tmp_path / "list.txt").write_text("0.png\n# a comment\n2.png\n")
    cli = load_script("make_shards")
    assert cli.main([str(tmp_path / "list.txt"), "--out", str(tmp_path / "out"), "--prefix", "style",
                     "--size", "64", "--workers", "0"]) == 0
    assert "2 images in 1 shards" in capsys.readouterr().out
    assert [Path(s["json"]["source"]).name for s in read_shards(str(tmp_path / "out" / "style-000000.tar"))] == [
        "0.png", "2.png"]
    assert cli.main([str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err.strip() == f"error: input not found: {tmp_path / 'missing'}"


# ----------------------------------------------------------------------------- streams

def test_ranks_and_workers_read_disjoint_shards(monkeypatch):
    urls = [f"shard-{i:02d}.tar" for i in range(10)]
    seen = {}
    for rank in range(2):
        for worker in range(2):
            for name, value in (("RANK", rank), ("WORLD_SIZE", 2), ("WORKER", worker), ("NUM_WORKERS", 2)):
                monkeypatch.setenv(name, str(value))
            stream = iter(ShardStream(urls, seed=0))
            seen[rank, worker] = {next(stream)["url"] for _ in range(30)}  # several passes of the endless stream
    readers = list(seen.values())
    assert all(a.isdisjoint(b) for i, a in enumerate(readers) for b in readers[i + 1:])
    assert set().union(*readers) == set(urls)
    # ranks given by the trainer (no RANK variable, e.g. Lightning's launcher) split the same way
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    for (rank, worker), urls_seen in seen.items():
        monkeypatch.setenv("WORKER", str(worker))
        stream = iter(ShardStream(urls, seed=1, ranks=(rank, 2)))
        assert {next(stream)["url"] for _ in range(30)} == urls_seen
    assert partition_shards(urls[:3], 1, 2, 1, 2) == [urls[0]]  # fewer shards than readers: shared (warned)


def test_real_loader_workers_split_shards(monkeypatch):
    """In real DataLoader worker processes, for one rank of two, via webdataset's worker info."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    urls = [f"shard-{i}.tar" for i in range(8)]
    loader = DataLoader(wds.DataPipeline(ShardStream(urls), lambda src: (s["url"] for s in src)),
                        batch_size=None, num_workers=2)
    stream = iter(loader)
    got = [next(stream) for _ in range(24)]  # workers answer in turn: even items worker 0, odd worker 1
    # reader slots: rank * num_workers + worker = 2 and 3 of 4
    assert set(got[0::2]) == {urls[2], urls[6]} and set(got[1::2]) == {urls[3], urls[7]}


def test_expand_shards_braces_globs_and_errors(tmp_path):
    for i in range(3):
        (tmp_path / f"a-{i:06d}.tar").touch()
    assert expand_shards(str(tmp_path / "a-{000000..000002}.tar")) == expand_shards(str(tmp_path / "a-*.tar"))
    assert len(expand_shards(f"{tmp_path}/a-000000.tar::{tmp_path}/a-00000[12].tar")) == 3
    with pytest.raises(FileNotFoundError, match="1 of 4 shards"):
        expand_shards(str(tmp_path / "a-{000000..000003}.tar"))
    with pytest.raises(FileNotFoundError, match="no shards match"):
        expand_shards(str(tmp_path / "b-*.tar"))


def test_epochs_continue_one_stream():
    epochs = Epochs(range(100), 3)
    assert len(epochs) == 3 and list(epochs) == [0, 1, 2] and list(epochs) == [3, 4, 5]


# ----------------------------------------------------------------------------- DataModule

@pytest.fixture
def shard_pair(tmp_path):
    """Content and style shards from synthetic images; style shard 1 holds a corrupt sample."""
    for kind, offset in (("content", 0), ("style", 50)):
        folder = tmp_path / f"{kind}_images"
        folder.mkdir()
        for i in range(8):
            photo(96 + 8 * i, 80, offset + i).save(folder / f"{i}.png")
        make_shards([folder], tmp_path / kind, prefix=kind, size=96, shard_count=2, workers=0, progress=False)
    with tarfile.open(tmp_path / "style" / "style-000001.tar", "a") as tar:
        info = tarfile.TarInfo("corrupt.jpg")
        info.size = 100
        tar.addfile(info, io.BytesIO(b"\xff\xd8" + b"\x00" * 98))
    return str(tmp_path / "content" / "content-*.tar"), str(tmp_path / "style" / "style-{000000..000003}.tar")


def test_datamodule_batches_and_fixed_validation(shard_pair, caplog):
    from nststyle.lit.datamodule import StyleTransferDataModule

    content, style = shard_pair
    make = lambda: StyleTransferDataModule(content, style, image_size=48, batch_size=4, num_workers=0,  # noqa: E731
                                           val_pairs=5, train_batches_per_epoch=7, shuffle_buffer=8)
    module = make()
    module.prepare_data()
    module.setup("fit")
    loader = module.train_dataloader()
    assert len(loader) == 7
    with caplog.at_level(logging.WARNING, logger="nststyle.data"):
        batches = list(loader) + list(loader)
    assert len(batches) == 14
    for content_batch, style_batch in batches:
        for batch in (content_batch, style_batch):
            assert batch.shape == (4, 3, 48, 48) and batch.dtype == torch.float32
            assert 0 <= batch.min() and batch.max() <= 1 and batch.std() > 0.01
    assert module.bad_samples.count >= 1  # 14 batches x 4 = 56 styles from 8 + 1 samples: the corrupt one was hit
    assert any("skipped 1 corrupt samples" in r.getMessage() for r in caplog.records)

    val_content, val_style = module.val_images
    assert val_content.shape == val_style.shape == (5, 3, 48, 48)
    other = make()
    other.setup("fit")
    assert torch.equal(other.val_images[0], val_content) and torch.equal(other.val_images[1], val_style)
    val_batches = list(module.val_dataloader())
    assert torch.equal(torch.cat([b[0] for b in val_batches]), val_content)


def test_paintings_can_be_cropped_at_a_size_and_scale_of_their_own(shard_pair):
    from nststyle.lit.datamodule import StyleTransferDataModule

    module = StyleTransferDataModule(*shard_pair, image_size=32, batch_size=3, num_workers=0, val_pairs=2,
                                     train_batches_per_epoch=3, shuffle_buffer=4, style_image_size=56,
                                     style_max_scale=1.0)
    module.setup("fit")
    for content_batch, style_batch in module.train_dataloader():
        assert content_batch.shape == (3, 3, 32, 32) and style_batch.shape == (3, 3, 56, 56)
    val_content, val_style = module.val_images
    assert val_content.shape == (2, 3, 32, 32) and val_style.shape == (2, 3, 56, 56)


def test_datamodule_with_workers_in_a_lightning_fit(shard_pair):
    import lightning as L

    from nststyle.lit.datamodule import StyleTransferDataModule

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Conv2d(3, 3, 1)
            self.shapes = []

        def training_step(self, batch, _):
            content, style = batch
            self.shapes.append((tuple(content.shape), tuple(style.shape)))
            return (self.layer(content) - style).pow(2).mean()

        def validation_step(self, batch, _):
            return (self.layer(batch[0]) - batch[1]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = StyleTransferDataModule(*shard_pair, image_size=32, batch_size=2, num_workers=2, val_pairs=2,
                                   train_batches_per_epoch=3, shuffle_buffer=4)
    probe = Probe()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(probe, datamodule=data)
    assert trainer.global_step == 6 and probe.shapes == [((2, 3, 32, 32), (2, 3, 32, 32))] * 6


def test_folders_datamodule_builds_shards_once(tmp_path):
    from nststyle.lit.datamodule import StyleTransferDataModule

    for kind in ("photos", "paintings"):
        (tmp_path / kind).mkdir()
        for i in range(3):
            photo(72, 72, i + (10 if kind == "paintings" else 0)).save(tmp_path / kind / f"{i}.jpg")
    config = OmegaConf.load(ROOT / "conf" / "data" / "folders.yaml")
    config.merge_with({"content_dir": str(tmp_path / "photos"), "style_dir": str(tmp_path / "paintings"),
                       "cache_dir": str(tmp_path / "cache"), "shard_workers": 0, "num_workers": 0,
                       "image_size": 32, "batch_size": 2, "val_pairs": 2})
    from hydra.utils import instantiate

    data = instantiate(config)
    data.prepare_data()
    built = sorted((tmp_path / "cache").rglob("*.tar"))
    assert len(built) == 2 and {p.name for p in built} == {"content-000000.tar", "style-000000.tar"}
    stamps = [p.stat().st_mtime_ns for p in built]
    data.prepare_data()
    assert [p.stat().st_mtime_ns for p in built] == stamps
    data.setup("fit")
    content, style = next(iter(data.train_dataloader()))
    assert content.shape == style.shape == (2, 3, 32, 32)


# ----------------------------------------------------------------------------- the sample set

def test_sample_set_builds_and_feeds_the_sample_config(tmp_path):
    from hydra.utils import instantiate

    from nststyle.sample_set import build_sample_set, style_images

    config = OmegaConf.load(ROOT / "conf" / "data" / "sample.yaml")
    assert config.sample_dir == "data/sample"
    config.merge_with({"sample_dir": str(tmp_path / "sample"), "num_workers": 0, "image_size": 64,
                       "batch_size": 4})
    data = instantiate(config)
    data.prepare_data()  # builds the set: the quick start needs no other step
    assert (data.content_shards, data.style_shards) == build_sample_set(tmp_path / "sample")
    counts = {}
    for kind in ("content", "style"):
        manifest = json.loads((tmp_path / "sample" / f"{kind}-manifest.json").read_text())
        assert manifest["complete"] and not manifest["skipped"] and len(manifest["shards"]) == 8
        counts[kind] = manifest["samples"]
    assert 32 <= counts["content"] <= 64 and 32 <= counts["style"] <= 64
    data.setup("fit")
    content, style = next(iter(data.train_dataloader()))
    assert content.shape == style.shape == (4, 3, 64, 64)

    # textures: deterministic, and different from each other in colour
    first, again = style_images(count=9), style_images(count=9)
    arrays = [np.asarray(image, np.float32) / 255 for _, image in first]
    assert all(np.array_equal(a, np.asarray(b)) for (_, a), (_, b) in zip(first, again))
    means = np.array([a.reshape(-1, 3).mean(0) for a in arrays])
    spread = np.abs(means[:, None] - means[None]).sum(-1)
    assert spread[np.triu_indices(9, 1)].min() > 0.02
    assert min(a.std() for a in arrays) > 0.05  # textured, not flat


def test_datamodule_splits_an_images_folder_by_the_holdout_list(tmp_path):
    """data=shared_images: training shards never hold a held-back image or its near-duplicate; the
    validation images are exactly the held-back ones."""
    from nststyle.lit.datamodule import StyleTransferDataModule

    images = tmp_path / "images"
    for kind, count in (("content", 5), ("style", 4)):
        (images / kind).mkdir(parents=True)
        for i in range(count):
            photo(72, 72, 10 * i + len(kind)).save(images / kind / f"{kind}{i}.png")
    (images / "NEAR_DUPLICATES.tsv").write_text("kind\tsubject\tfiles\ncontent\tsame\tcontent/content0.png content/content3.png\n")
    holdout = tmp_path / "holdout.tsv"
    holdout.write_text("content\tcontent/content0.png\nstyle\tstyle/style2.png\n")
    module = StyleTransferDataModule(images_dir=str(images), holdout=str(holdout), cache_dir=str(tmp_path / "cache"),
                                     image_size=32, batch_size=2, num_workers=0, val_pairs=1, shuffle_buffer=2,
                                     shard_size=64, shard_workers=0)
    module.prepare_data()
    module.setup("fit")

    def sources(pattern):
        return sorted(Path(json.loads(sample["json"])["source"]).name
                      for url in expand_shards(pattern) for sample in wds.WebDataset(url, shardshuffle=False))
    assert sources(module.content_shards) == ["content1.png", "content2.png", "content4.png"]
    assert sources(module.style_shards) == ["style0.png", "style1.png", "style3.png"]
    assert sources(module.hparams.val_content_shards) == ["content0.png"]
    assert sources(module.hparams.val_style_shards) == ["style2.png"]
    assert module.val_images[0].shape == (1, 3, 32, 32)


def test_extra_training_folders_join_the_training_shards_only(tmp_path):
    """data=shared_train: ../shared/train's folders add to the training shards, never to validation; the folder
    list is stored as a plain list (checkpoints load with weights_only=True); a missing folder fails fast."""
    from omegaconf import OmegaConf

    from nststyle.lit.datamodule import StyleTransferDataModule

    images, extra_photos, extra_paintings = tmp_path / "images", tmp_path / "photos", tmp_path / "paintings"
    for folder, prefix, count in ((images / "content", "content", 2), (images / "style", "style", 2),
                                  (extra_photos, "p", 3), (extra_paintings, "q", 2)):
        folder.mkdir(parents=True)
        for i in range(count):
            photo(72, 72, 7 * i + len(prefix)).save(folder / f"{prefix}{i}.png")
    holdout = tmp_path / "holdout.tsv"
    holdout.write_text("content\tcontent/content0.png\nstyle\tstyle/style0.png\n")
    options = dict(images_dir=str(images), holdout=str(holdout), cache_dir=str(tmp_path / "cache"), image_size=32,
                   batch_size=2, num_workers=0, val_pairs=1, shuffle_buffer=2, shard_size=64, shard_workers=0)
    module = StyleTransferDataModule(**options, extra_content_dirs=OmegaConf.create([str(extra_photos)]),
                                     extra_style_dirs=OmegaConf.create([str(extra_paintings)]))
    assert type(module.hparams.extra_content_dirs) is list
    module.prepare_data()

    def sources(pattern):
        return sorted(Path(json.loads(sample["json"])["source"]).name
                      for url in expand_shards(pattern) for sample in wds.WebDataset(url, shardshuffle=False))
    assert sources(module.content_shards) == ["content1.png", "p0.png", "p1.png", "p2.png"]
    assert sources(module.style_shards) == ["q0.png", "q1.png", "style1.png"]
    assert sources(module.hparams.val_content_shards) == ["content0.png"]
    missing = StyleTransferDataModule(**options, extra_style_dirs=[str(tmp_path / "nowhere")])
    with pytest.raises(FileNotFoundError, match="extra_style_dirs"):
        missing.check_sources()
