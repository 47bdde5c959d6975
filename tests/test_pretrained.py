"""The shipped weights: registry, inference-only export, a real style effect, a non-editable install, warm starts."""
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from skimage import data as skdata

import nststyle.loading as loading
from nststyle.checkpoints import CheckpointError, export, half_if_it_fits, inference_state, warm_start
from nststyle.images import resize_max
from nststyle.metrics import StyleMetrics
from nststyle.models.layers import ReflectConv2d
from nststyle.models.variational import VariationalStyleNet
from nststyle.pretrained import Pretrained
from nststyle.sample_set import style_images
from nststyle.ship import main
from nststyle.stylize import StylizeError, load_stylizer
from nststyle.swap import bf16_is_fast

ROOT = Path(__file__).resolve().parents[1]

SHIPPED = list(Pretrained)  # aliases (DEFAULT) are not repeated


def tensor(array, size=128) -> torch.Tensor:
    image = torch.from_numpy(array).permute(2, 0, 1).float().div(255)
    return resize_max(image[:3] if image.shape[0] >= 3 else image.expand(3, -1, -1), size, 8)[None]


@pytest.mark.parametrize("weights", SHIPPED, ids=lambda w: w.name.lower())
def test_shipped_model_loads_and_follows_its_painting(weights):
    """Style gain > 1: each output is closer to its own painting's statistics than to the other painting's."""
    assert weights.value.path.is_file() and weights.value.path.stat().st_size <= 10 * 2 ** 20
    stylizer = load_stylizer(weights.name.lower(), "cpu")
    assert stylizer.kind == weights.value.kind
    photo = tensor(skdata.astronaut())
    paintings = [tensor(np.asarray(image.convert("RGB"))) for _, image in style_images(2)]
    metrics = StyleMetrics()
    outputs = [stylizer.stylize(photo, painting) for painting in paintings]
    for output in outputs:
        assert output.shape == photo.shape and torch.isfinite(output).all()
    own = [metrics(outputs[i], photo, paintings[i])["style"] for i in range(2)]
    other = [metrics(outputs[1 - i], photo, paintings[i])["style"] for i in range(2)]
    assert sum(other) / sum(own) > 1, (own, other)


def test_default_is_the_variational_model():
    assert Pretrained.DEFAULT is Pretrained.VARIATIONAL and Pretrained.get("Inverse") is Pretrained.INVERSE
    assert Pretrained.get("nonsense") is None


NET = dict(style_dim=4, width=8, max_width=16, downsamplings=2, bottleneck_blocks=1, mapping_layers=1,
           mapping_hidden=8, style_encoder="vgg", style_vgg_weights="random")


def training_checkpoint(path: Path, **net_overrides) -> Path:
    torch.manual_seed(0)
    net_config = {**NET, **net_overrides}
    net = VariationalStyleNet(**net_config)
    state = {f"net.{key}": value for key, value in net.state_dict().items()}
    state["vgg.features.0.weight"] = torch.zeros(1)  # the loss network: never shipped
    torch.save({"state_dict": state, "nststyle": {"kind": "variational", "net": net_config, "vgg_weights": "random"},
                "optimizer_states": [{"state": {0: torch.zeros(1000)}}], "global_step": 7}, path)
    return path


def test_export_is_inference_only_and_stylises_like_the_checkpoint(tmp_path):
    full = training_checkpoint(tmp_path / "last.ckpt")
    shipped = export(full, tmp_path / "shipped.pt", recipe="python train.py experiment=x", style_size=96)
    content = torch.load(shipped, weights_only=True)
    assert set(content) == {"nststyle", "state_dict"}
    assert content["nststyle"]["step"] == 7 and content["nststyle"]["recipe"] == "python train.py experiment=x"
    assert all(value.dtype == torch.float16 for value in content["state_dict"].values() if value.is_floating_point())
    assert half_if_it_fits(torch.tensor([1e6])).dtype == torch.float32  # batch norm variances stay finite
    assert not any(".vgg." in key or key.startswith("vgg.") for key in content["state_dict"])
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left nothing behind
    torch.manual_seed(1)
    photo, painting = torch.rand(1, 3, 32, 40), torch.rand(1, 3, 24, 24)
    a = load_stylizer(full, "cpu").stylize(photo, painting)
    b = load_stylizer(shipped, "cpu").stylize(photo, painting)
    assert (a - b).abs().max() < 2e-2  # half-precision weights
    assert load_stylizer(shipped, "cpu").style_size == 96 and load_stylizer(full, "cpu").style_size is None


def test_a_shipped_file_gets_a_new_card_and_keeps_its_weights_step_and_recipe(tmp_path):
    shipped = export(training_checkpoint(tmp_path / "last.ckpt"), tmp_path / "shipped.pt", recipe="r", style_size=96)
    main([str(shipped), str(tmp_path / "recarded.pt"), "--colour-shift", "0.5"])
    before, after = (torch.load(path, weights_only=True) for path in (shipped, tmp_path / "recarded.pt"))
    assert after["nststyle"] == {**before["nststyle"], "colour_shift": 0.5}  # step 7, recipe, style_size kept
    assert all(torch.equal(before["state_dict"][key], value) for key, value in after["state_dict"].items())
    assert load_stylizer(tmp_path / "recarded.pt", "cpu").colour_shift == 0.5


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
    state = inference_state(torch.load(training_checkpoint(tmp_path / "a.ckpt"), weights_only=True))
    state["nststyle"]["net"] = {**NET, "width": 16}
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises((StylizeError, RuntimeError)):
        load_stylizer(tmp_path / "other.pt", "cpu")


def variational_module(**net_overrides):
    net = {**NET, **net_overrides}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model=variational_tiny", "model.vgg_weights=random",
                                          *[f"++model.net.{key}={value}" for key, value in net.items()
                                            if key not in ("style_dim", "style_vgg_weights")],
                                          f"model.style_dim={net['style_dim']}"])
    return hydra.utils.instantiate(cfg.model)


def test_warm_start_copies_the_weights_and_checks_the_kind(tmp_path):
    shipped = export(training_checkpoint(tmp_path / "last.ckpt"), tmp_path / "s.pt")
    model = variational_module()
    warm_start(model, str(shipped))
    expected = torch.load(shipped, weights_only=True)["state_dict"]["net.decoder.to_rgb.weight"]
    assert torch.equal(model.net.decoder.to_rgb.weight.half(), expected)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        inverse = hydra.utils.instantiate(compose("train", overrides=["model=inverse", "model.vgg_weights=random"]).model)
    with pytest.raises(CheckpointError, match="'variational' model"):
        warm_start(inverse, str(shipped))
    with pytest.raises(CheckpointError, match="not found"):
        warm_start(model, str(tmp_path / "missing.pt"))


def test_warm_start_grows_a_deeper_bottleneck_that_starts_as_the_same_function(tmp_path):
    shipped = export(training_checkpoint(tmp_path / "last.ckpt"), tmp_path / "s.pt")
    source = load_stylizer(shipped, "cpu")
    grown = variational_module(bottleneck_blocks=NET["bottleneck_blocks"] + 2)
    warm_start(grown, str(shipped))
    grown.net.style_encoder.vgg.load_state_dict(source.net.style_encoder.vgg.state_dict())  # random VGG: the same one
    grown.net.eval()
    torch.manual_seed(2)
    photo, painting = torch.rand(1, 3, 32, 40), torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        expected = source.net(photo, painting)[0]
        torch.testing.assert_close(grown.net(photo, painting)[0], expected)
    # the new blocks train: their last convolution gets a gradient at once
    grown.net.train()
    grown.net(photo, painting)[0].mean().backward()
    assert grown.net.decoder.bottleneck[-1].conv2.weight.grad.abs().sum() > 0
    with pytest.raises(CheckpointError, match="bottleneck_blocks"):  # shallower is no growth
        warm_start(variational_module(bottleneck_blocks=0), str(shipped))
    with pytest.raises(CheckpointError, match="width"):
        warm_start(variational_module(bottleneck_blocks=3, width=16), str(shipped))

def test_a_checkpoint_with_the_retired_options_loads_where_they_built_nothing(tmp_path):
    """Checkpoints of 0.1.0 (the shipped weights, runs with model.*_weight keys) record decoder_norm, up_norm,
    fuse_norm and noise in their card: at the values that built nothing they load for inference and init_from;
    a network that used them is refused in one line."""
    retired = {"decoder_norm": "instance", "up_norm": None, "fuse_norm": None, "noise": False}
    old = training_checkpoint(tmp_path / "old.ckpt")
    checkpoint = torch.load(old, weights_only=True)
    checkpoint["nststyle"]["net"].update(retired)
    checkpoint["hyper_parameters"] = {"net": {**NET, **retired}, "local_style_weight": 4e6, "structure_weight": 1e6,
                                      "stability_weight": 0.0, "invented_edges_weight": 0.0, "patch_weight": 0.0,
                                      "style_hue_shift": 0.0}
    torch.save(checkpoint, old)
    photo, painting = torch.rand(1, 3, 32, 40), torch.rand(1, 3, 24, 24)
    assert load_stylizer(old, "cpu").stylize(photo, painting).isfinite().all()
    model = variational_module()
    warm_start(model, str(old))
    assert torch.equal(model.net.decoder.to_rgb.weight, checkpoint["state_dict"]["net.decoder.to_rgb.weight"])
    assert "noise" not in torch.load(export(old, tmp_path / "s.pt"), weights_only=True)["nststyle"]["net"]
    checkpoint["nststyle"]["net"]["decoder_norm"] = "actnorm"
    torch.save(checkpoint, tmp_path / "actnorm.ckpt")
    with pytest.raises(StylizeError, match="net.decoder_norm='actnorm', an option removed in nststyle 0.2.0"):
        load_stylizer(tmp_path / "actnorm.ckpt", "cpu")


def test_warm_start_to_zero_padding_and_smaller_kernels_keeps_the_parameters_and_flat_answers(tmp_path):
    """padding=zeros takes the source's parameters as they are; smaller kernels (RGB, stem, full-resolution fuse)
    the source's resized, so that a flat map answers alike; the result stylises (finite, in range) and trains."""
    shipped = export(training_checkpoint(tmp_path / "last.ckpt"), tmp_path / "s.pt")
    source = load_stylizer(shipped, "cpu").net
    zero = variational_module(padding="zeros")
    warm_start(zero, str(shipped))
    assert isinstance(zero.net.decoder.to_rgb, torch.nn.Conv2d) and zero.net.decoder.to_rgb.padding == (3, 3)
    assert not any(isinstance(module, ReflectConv2d) for module in zero.net.decoder.modules())
    own, theirs = zero.net.state_dict(), source.state_dict()
    assert all(torch.equal(own[key], theirs[key].to(own[key].dtype)) for key in own if ".vgg." not in key)
    out = zero.net(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 24, 24))[0]
    out.mean().backward()
    assert out.isfinite().all() and 0 <= out.min() and out.max() <= 1
    assert zero.net.decoder.to_rgb.weight.grad.isfinite().all()
    small = variational_module(rgb_kernel=3, stem_kernel=3, full_res_fuse_kernel=1)
    warm_start(small, str(shipped))
    convs = {"to_rgb": lambda net: net.decoder.to_rgb, "stem": lambda net: net.content_encoder.stem[0],
             "fuse": lambda net: net.decoder.ups[-1].conv_fuse}
    assert {name: conv(small.net).weight.shape[-1] for name, conv in convs.items()} == {"to_rgb": 3, "stem": 3, "fuse": 1}
    assert {name: conv(source).weight.shape[-1] for name, conv in convs.items()} == {"to_rgb": 7, "stem": 7, "fuse": 3}
    for name, conv in convs.items():
        channels = conv(source).in_channels
        flat = torch.rand(1, channels, 1, 1).expand(1, channels, 12, 12).contiguous()
        with torch.no_grad():  # away from the borders (reflect padding against zeros)
            torch.testing.assert_close(conv(small.net)(flat)[..., 4:-4, 4:-4], conv(source)(flat)[..., 4:-4, 4:-4],
                                       rtol=1e-3, atol=1e-3, msg=name)
    with pytest.raises(CheckpointError, match="width"):
        warm_start(variational_module(rgb_kernel=3, width=16), str(shipped))


def test_a_plain_install_carries_the_weights(tmp_path):
    """pip install . (not editable): the wheel holds the shipped files and the held-back list, and an import
    from outside the repository finds them."""
    wheel_dir, target, source = tmp_path / "wheel", tmp_path / "site", tmp_path / "source"
    # build from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "nststyle", source / "nststyle", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir), str(source)], check=True, timeout=600)
    wheel = next(wheel_dir.glob("nststyle-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for weights in SHIPPED:
        assert f"nststyle/shipped/{weights.value.file}" in names
    assert "nststyle/holdout.tsv" in names
    assert "nststyle/swap_kernel.c" in names  # the style swap's C pass compiles from the installed source
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=600)
    code = ("import nststyle, nststyle.pretrained as p; from nststyle.stylize import load_stylizer; "
            "assert str(p.Pretrained.DEFAULT.value.path).startswith(%r), p.Pretrained.DEFAULT.value.path; "
            "load_stylizer('variational', 'cpu'); import nststyle.swap_kernel as k; assert k.available(); "
            "print(nststyle.__file__)" % str(target))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(target), "NSTSTYLE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(target))


def test_a_kill_during_export_leaves_the_previous_file_whole(tmp_path):
    full = training_checkpoint(tmp_path / "last.ckpt")
    target = export(full, tmp_path / "shipped.pt", recipe="first")
    script = f"""
import os, signal, torch
import nststyle.checkpoints as checkpoints
real_save = torch.save
def save_half_then_die(obj, path):
    real_save(obj, path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
checkpoints.torch.save = save_half_then_die
checkpoints.export({str(full)!r}, {str(target)!r}, recipe="second")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert torch.load(target, weights_only=True)["nststyle"]["recipe"] == "first"  # untouched and loadable


@pytest.mark.parametrize("kind", ["variational", "inverse"])
def test_every_kind_reads_paintings_at_the_style_size_its_file_names(kind, tmp_path, tiny_checkpoint,
                                                                      inverse_checkpoint):
    checkpoint = torch.load(tiny_checkpoint if kind == "variational" else inverse_checkpoint, weights_only=False)
    assert load_stylizer(tiny_checkpoint if kind == "variational" else inverse_checkpoint, "cpu").style_size is None
    checkpoint["nststyle"]["style_size"] = 48
    torch.save(checkpoint, tmp_path / "card.pt")
    stylizer = load_stylizer(tmp_path / "card.pt", "cpu")
    assert stylizer.style_size == 48 and load_stylizer(tmp_path / "card.pt", "cpu", style_size=64).style_size == 64
    with pytest.raises(StylizeError, match="style_size is the longer side"):
        load_stylizer(tmp_path / "card.pt", "cpu", style_size=0)
    # handed a painting at any scale, the model reads it for its style at its style_size
    torch.manual_seed(0)
    content, painting = torch.rand(1, 3, 32, 40), torch.rand(1, 3, 96, 120)
    torch.testing.assert_close(stylizer.stylize(content, painting), stylizer.stylize(content, resize_max(painting, 48)))
    assert (stylizer.stylize(content, painting) - load_stylizer(tiny_checkpoint if kind == "variational" else
            inverse_checkpoint, "cpu").stylize(content, painting)).abs().max() > 1e-4  # read as given without one


@pytest.mark.parametrize("weights", SHIPPED, ids=lambda w: w.name.lower())
def test_bf16_inference_stays_close_to_float32(weights):
    """precision=bf16 runs the networks under bfloat16 autocast: float32 images within a few 1/255 of
    the float32 path on average (bf16 keeps 8 bits of mantissa), and a bad precision is refused."""
    photo = tensor(skdata.astronaut())
    painting = tensor(np.asarray(style_images(1)[0][1].convert("RGB")))
    exact = load_stylizer(weights.name.lower(), "cpu").stylize(photo, painting)
    stylizer = load_stylizer(weights.name.lower(), "cpu", precision="bf16")
    fast = stylizer.stylize(photo, painting)
    # the networks run channels-last in bfloat16 (oneDNN's fast layout); results come back as plain NCHW
    convolution = next(m for n in stylizer.networks() for m in n.modules() if isinstance(m, torch.nn.Conv2d))
    assert convolution.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.dtype == torch.float32 and fast.shape == exact.shape and fast.is_contiguous()
    difference = (fast - exact).abs()
    assert difference.mean() < 0.02 and 0 < difference.max() < 0.5, (difference.mean(), difference.max())
    with pytest.raises(StylizeError, match="unknown precision 'fp8'"):
        load_stylizer(weights.name.lower(), "cpu", precision="fp8")


def test_auto_precision_is_bf16_where_the_device_runs_it_natively():
    expected = "bf16" if bf16_is_fast(torch.device("cpu")) else "fp32"
    assert load_stylizer("inverse", "cpu", precision="auto").precision == expected
    assert load_stylizer("variational", "cpu").precision == "fp32"  # the library's default stays explicit


def test_explicit_bf16_warns_only_where_it_is_emulated(monkeypatch, recwarn):
    """precision=bf16 on a CPU without native bfloat16 still runs (as asked) but says it is emulated and slow."""
    monkeypatch.setattr(loading, "bf16_is_fast", lambda device: False)
    with pytest.warns(UserWarning, match="without native bfloat16"):
        assert load_stylizer("inverse", "cpu", precision="bf16").precision == "bf16"
    assert load_stylizer("inverse", "cpu", precision="auto").precision == "fp32"
    monkeypatch.setattr(loading, "bf16_is_fast", lambda device: True)
    recwarn.clear()
    load_stylizer("inverse", "cpu", precision="bf16")
    assert not [w for w in recwarn if "native bfloat16" in str(w.message)]
