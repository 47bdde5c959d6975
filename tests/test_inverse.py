"""The Chen & Schmidt inverse network: decoder, training mix, training signal, checkpoints, inference."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from nststyle.lit.inverse import InverseNetwork, swap_pairs
from nststyle.models.inverse import InverseNet
from nststyle.swap import style_swap

ROOT = Path(__file__).resolve().parents[1]
TINY_NET = {"widths": [16, 8], "norm": "instance"}


@pytest.fixture(autouse=True)
def one_thread():
    # The CI box has 2 cores shared with other jobs: a second intra-op thread makes these tiny
    # convolutions several times slower, not faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_module(**overrides) -> InverseNetwork:
    options = {"net": TINY_NET, "vgg_weights": "random", "tv_weight": 0.0}
    return InverseNetwork(**{**options, **overrides})


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
@pytest.mark.parametrize("upsample", ["nearest", "transposed"])
@pytest.mark.parametrize("output", ["sigmoid", "clamp"])
def test_decoder_maps_relu3_1_back_to_image_size(norm, upsample, output):
    torch.manual_seed(0)
    net = InverseNet(norm=norm, upsample=upsample, output=output)
    features = torch.randn(2, 256, 6, 9).relu().requires_grad_()
    image = net(features)
    assert image.shape == (2, 3, 24, 36)  # relu3_1 is 1/4 of the image size
    assert image.min() >= 0 and image.max() <= 1
    image.square().mean().backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_decoder_mirrors_vgg_up_to_relu3_1():
    convs = [m for m in InverseNet().modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(256, 128), (128, 128), (128, 64), (64, 64), (64, 3)]


def test_clamp_output_passes_gradient_through():
    net = InverseNet(in_channels=8, widths=[4], norm="none", output="clamp")
    with torch.no_grad():
        net.layers[-2][1].bias.fill_(5.0)  # every pixel overshoots
    image = net(torch.rand(1, 8, 4, 4))
    assert torch.equal(image, torch.ones_like(image))
    image.sum().backward()
    assert net.layers[-2][1].bias.grad.abs().sum() > 0  # a plain clamp would give exactly 0 here


def test_decoder_traces_and_stays_resolution_agnostic():
    net = InverseNet(in_channels=16, widths=[8, 4]).eval()
    traced = torch.jit.trace(net, torch.rand(1, 16, 5, 5))
    other = torch.rand(2, 16, 7, 11)
    torch.testing.assert_close(traced(other), net(other))


def test_decoder_rejects_unknown_options():
    with pytest.raises(ValueError, match="norm"):
        InverseNet(norm="layer")


def test_swap_pairs_cover_every_pair_of_the_reference_mix():
    photos, paintings = swap_pairs(2, 4)
    assert sorted(zip(photos, paintings)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert swap_pairs(3, 3) == ([0, 1, 2], [0, 1, 2])  # the diagonal first
    with pytest.raises(ValueError, match="n_swapped"):
        swap_pairs(2, 5)


def test_swapped_activations_are_style_swap_of_their_pair():
    torch.manual_seed(0)
    module = tiny_module(n_photos=2, n_paintings=1, n_swapped=4, patch_size=3, stride=1)
    photos, paintings = torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40)
    mix = module.training_activations(photos, paintings)
    z = mix["activations"]
    photo_features, painting_features = module.encode(photos), module.encode(paintings)
    assert z.shape == (2 + 1 + 4, 256, 10, 10) and mix["sizes"] == [2, 1, 4]
    torch.testing.assert_close(z[:2], photo_features)
    torch.testing.assert_close(z[2:3], painting_features[:1])
    pairs = list(zip(mix["photo_index"], mix["painting_index"]))
    assert sorted(pairs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for swapped, (p, s) in zip(z[3:], pairs):
        expected = style_swap(photo_features[p:p + 1], painting_features[s:s + 1], 3, 1)[0]
        torch.testing.assert_close(swapped, expected)
        assert not torch.allclose(swapped, photo_features[p])


def test_paintings_of_another_size_than_the_photos_are_refused_with_the_option_to_unset():
    module = tiny_module(n_photos=2, n_paintings=1, n_swapped=2)
    with pytest.raises(ValueError, match="data.style_image_size"):
        module.losses(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 48, 48))


def test_ablation_mix_has_no_swapped_activations():
    module = tiny_module(n_photos=2, n_paintings=2, n_swapped=0)
    terms = module.losses(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert "recon_swapped" not in terms and {"recon_photo", "recon_painting"} <= terms.keys()


def test_tiny_inverse_network_overfits_a_handful_of_activations():
    torch.manual_seed(0)
    module = tiny_module(net={"widths": [32, 16]}, n_photos=2, n_paintings=2, n_swapped=4)
    photos, paintings = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    optimizer = torch.optim.Adam(module.net.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        terms = module.losses(photos, paintings)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        history.append(float(terms["recon"]))
    assert history[-1] <= 0.5 * history[0], history[::5]
    assert float(terms["recon_swapped"]) <= 0.5 * history[0]


def test_optional_pixel_and_style_terms_enter_the_total():
    torch.manual_seed(0)
    photos, paintings = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    module = tiny_module(pixel_weight=2.0, style_weight=3.0, style_loss={"kind": "bn"}, tv_weight=0.1)
    terms = module.losses(photos, paintings)
    expected = terms["recon"] + 0.1 * terms["tv"] + 2.0 * terms["pixel"] + 3.0 * terms["style"]
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in module.net.parameters())


class _Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return torch.rand(3, 32, 32, generator=generator), torch.rand(3, 32, 32, generator=generator)


def train_tiny_checkpoint(path, **overrides):
    module = tiny_module(**overrides)
    module.run_config = {"model": {"_target_": "nststyle.lit.inverse.InverseNetwork"}, "seed": 1}
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, torch.utils.data.DataLoader(_Pairs(), batch_size=2))
    trainer.save_checkpoint(path)
    return module


def test_checkpoint_carries_config_and_the_encoder_it_inverts(tmp_path):
    module = train_tiny_checkpoint(tmp_path / "inverse.ckpt", patch_size=5)
    checkpoint = torch.load(tmp_path / "inverse.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["nststyle"] == {"kind": "inverse", "net": TINY_NET, "vgg_weights": "random",
                                      "layer": "relu3_1", "patch_size": 5, "stride": 1}
    assert checkpoint["config"]["seed"] == 1
    vgg = {key for key in checkpoint["state_dict"] if key.startswith("vgg.")}
    assert vgg == {f"vgg.{key}" for key in module.vgg.state_dict()}  # random weights could not be rebuilt
    restored = InverseNetwork.load_from_checkpoint(tmp_path / "inverse.ckpt", map_location="cpu")
    for key, value in module.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value)


# -- inference ----------------------------------------------------------------------------------------

def skimage_pictures(folder, size=48):
    from skimage import data
    from torchvision.transforms.functional import resize

    from nststyle.images import save_image
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("astronaut", "coffee", "chelsea"):
        image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255
        paths.append(save_image(resize(image, [size, size + 8], antialias=True), folder / f"{name}.png"))
    return paths


def test_inverse_stylizer_is_swap_then_decoder(tmp_path):
    from nststyle.stylize import InverseStylizer, StylizeError, load_stylizer
    module = train_tiny_checkpoint(tmp_path / "inverse.ckpt", patch_size=3)
    stylizer = load_stylizer(tmp_path / "inverse.ckpt", "cpu")
    assert isinstance(stylizer, InverseStylizer) and stylizer.patch_size == 3
    torch.manual_seed(1)
    content, style = torch.rand(1, 3, 40, 48), torch.rand(1, 3, 36, 36)
    module.eval()
    swapped = style_swap(module.encode(content), module.encode(style), 3, 1)
    torch.testing.assert_close(stylizer.stylize(content, style), module.net(swapped))
    # alpha blends the swapped activations with the content's own; alpha=0 decodes the content itself
    torch.testing.assert_close(stylizer.stylize(content, style, alpha=0.0), module.net(module.encode(content)))
    half = 0.5 * swapped + 0.5 * module.encode(content)
    torch.testing.assert_close(stylizer.stylize(content, style, alpha=0.5), module.net(half))
    # inference-time swap options override the trained ones; impossible ones are refused
    stylizer = load_stylizer(tmp_path / "inverse.ckpt", "cpu", patch_size=5, stride=2)
    torch.testing.assert_close(stylizer.stylize(content, style),
                               module.net(style_swap(module.encode(content), module.encode(style), 5, 2)))
    with pytest.raises(StylizeError, match="stride"):
        load_stylizer(tmp_path / "inverse.ckpt", "cpu", patch_size=3, stride=4)
    # the approximate swap (49 style patches at relu3_1 here: its first stage prunes them to 12 candidates)
    stylizer = load_stylizer(tmp_path / "inverse.ckpt", "cpu", swap_mode="approximate")
    assert stylizer.swap_mode == "approximate"
    approximate = style_swap(module.encode(content), module.encode(style), 3, 1, mode="approximate")
    torch.testing.assert_close(stylizer.stylize(content, style), module.net(approximate))
    with pytest.raises(StylizeError, match="unknown swap_mode 'fast': exact or approximate"):
        load_stylizer(tmp_path / "inverse.ckpt", "cpu", swap_mode="fast")
    with pytest.raises(StylizeError, match="not apply"):
        load_stylizer(tmp_path / "inverse.ckpt", "cpu", temperature=2.0)


@pytest.fixture(scope="module")
def quickstart_checkpoint(tmp_path_factory):
    """``train.py experiment=inverse_quickstart``, shrunk to seconds (tiny widths, 32 px, random VGG)."""
    from hydra import compose, initialize_config_dir

    from nststyle.sample_set import build_sample_set
    sys.path.insert(0, str(ROOT))
    from train import train

    sample, run = tmp_path_factory.mktemp("sample"), tmp_path_factory.mktemp("run")
    build_sample_set(sample)
    overrides = ["experiment=inverse_quickstart", "model.vgg_weights=random", "model.net.widths=[16,8]", "init_from=null",
                 "data.image_size=32", "data.num_workers=0", "data.val_pairs=2", "data.shuffle_buffer=4",
                 f"data.sample_dir={sample}", f"paths.output_dir={run}", "trainer.max_steps=3",
                 "data.train_batches_per_epoch=3", "trainer.precision=32-true", "threads=1", "logger=csv"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        metrics = train(compose("train", overrides=overrides))
    return run / "checkpoints" / "last.ckpt", metrics


def test_train_py_inverse_quickstart_writes_a_checkpoint_with_its_config(quickstart_checkpoint):
    path, metrics = quickstart_checkpoint
    for name in ("train/loss", "train/recon", "train/recon_swapped", "train/tv", "val/recon_swapped"):
        assert name in metrics and torch.isfinite(torch.tensor(metrics[name])), (name, metrics)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3 and checkpoint["nststyle"]["kind"] == "inverse"
    assert checkpoint["config"]["model"]["_target_"] == "nststyle.lit.inverse.InverseNetwork"
    assert checkpoint["config"]["model"]["n_swapped"] == 4 and checkpoint["config"]["data"]["batch_size"] == 2
    assert list((path.parent.parent / "csv" / "version_0" / "images").glob("val_step*.jpg"))  # the grid callback


def test_checkpoint_to_infer_py_end_to_end(tmp_path, quickstart_checkpoint):
    from PIL import Image
    checkpoint, _ = quickstart_checkpoint
    photos = skimage_pictures(tmp_path / "photos")
    styles = skimage_pictures(tmp_path / "styles", size=40)[:2]
    result = subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), f"ckpt={checkpoint}", f"content={tmp_path / 'photos'}",
         f"style=[{styles[0]},{styles[1]}]", f"output={tmp_path / 'out' / 'result.png'}", "max_size=44",
         "preserve_color=true", "device=cpu", "patch_size=5", "stride=2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stylize: wrote 6 image(s)" in result.stdout
    outputs = sorted((tmp_path / "out").glob("result_*_*.png"))
    assert len(outputs) == 6 and (tmp_path / "out" / "result_grid.jpg").is_file()
    for path in outputs:
        width, height = Image.open(path).size
        assert max(width, height) <= 44 and width % 4 == 0 and height % 4 == 0
