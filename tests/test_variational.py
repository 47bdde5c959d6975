"""The variational style network: every block's shapes and gradients, AdaIN statistics, the
reparameterisation, traceability, and a tiny model overfitting one (content, style) pair."""
import time

import pytest
import torch
from skimage import data as skdata

from nststyle.images import colour_statistics
from nststyle.lit.variational import VariationalStyleTransfer, drop_nonfinite_gradients, lr_lambda
from nststyle.metrics import invented_edges, low_frequency_change, structure_distance
from nststyle.models.variational import (AdaIN, AdaINResBlock, Decoder, Encoder, MappingNetwork,
                                         ResBlock, StyleEncoder, UpBlock, VariationalStyleNet, VGGStyleEncoder)
from nststyle.stylize import load_stylizer

TINY = dict(style_dim=4, width=8, max_width=16, downsamplings=2, bottleneck_blocks=1, mapping_layers=1,
            mapping_hidden=16)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def assert_all_grads_finite(module: torch.nn.Module):
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(parameter.grad).all(), f"non-finite gradient in {name}"


def backward_through(module, *inputs):
    out = module(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    (out.float().square().mean() if torch.is_tensor(out) else sum(o.square().mean() for o in out)).backward()
    return out


@pytest.mark.parametrize("stride, c_in, c_out", [(1, 8, 8), (2, 8, 16), (1, 8, 12)])
@pytest.mark.parametrize("norm", ["instance", "batch", "group", "none"])
def test_res_block_shapes_and_gradients(stride, c_in, c_out, norm):
    block = ResBlock(c_in, c_out, stride, norm)
    x = torch.randn(2, c_in, 12, 10, requires_grad=True)
    out = backward_through(block, x)
    assert out.shape == (2, c_out, 12 // stride, 10 // stride)
    assert (out >= 0).all()  # ReLU after the sum
    assert_all_grads_finite(block)
    assert torch.isfinite(x.grad).all()


def test_unknown_norm_is_rejected():
    with pytest.raises(ValueError, match="unknown normalisation"):
        ResBlock(4, 4, norm="layer")


def test_encoder_returns_every_level_finest_first():
    encoder = Encoder(width=8, downsamplings=3, blocks_per_level=2, max_width=16)
    features = encoder(torch.rand(2, 3, 32, 48))
    assert [tuple(f.shape) for f in features] == [(2, 8, 32, 48), (2, 16, 16, 24), (2, 16, 8, 12), (2, 16, 4, 6)]
    assert encoder.widths == [8, 16, 16, 16]
    sum(f.mean() for f in features).backward()
    assert_all_grads_finite(encoder)


@pytest.mark.parametrize("pooling", ["mean", "mean_std"])
def test_style_encoder_gives_a_gaussian_code_for_any_image_size(pooling):
    encoder = StyleEncoder(style_dim=5, width=8, downsamplings=2, max_width=16, pooling=pooling)
    for size in [(32, 32), (37, 53)]:  # adaptive pooling: no size constraint on style images
        mu, logvar = encoder(torch.rand(3, 3, *size))
        assert mu.shape == logvar.shape == (3, 5)
    (mu.sum() + logvar.sum()).backward()
    assert_all_grads_finite(encoder)


def test_vgg_style_encoder_codes_any_size_and_trains_only_its_head():
    encoder = VGGStyleEncoder(style_dim=5, vgg_weights="random", hidden=32)
    for size in [(32, 32), (37, 53)]:
        mu, logvar = encoder(torch.rand(3, 3, *size))
        assert mu.shape == logvar.shape == (3, 5)
    torch.testing.assert_close(logvar.mean(), torch.tensor(-4.0), atol=1.0, rtol=0)  # narrow at the start
    (mu.sum() + logvar.sum()).backward()
    assert_all_grads_finite(encoder.head)
    assert all(p.grad is None for p in encoder.vgg.parameters())  # the VGG stays frozen


def test_vgg_style_encoder_reuses_the_losses_vgg_features(monkeypatch):
    """Training hands the style targets' VGG features to Es: same code, no second VGG pass over the styles."""
    module = VariationalStyleTransfer(net=dict(TINY, style_encoder="vgg"), vgg_weights="random")
    assert module.hparams.net["style_vgg_weights"] == "random"
    module.net.style_encoder.vgg.load_state_dict(module.vgg.state_dict(), strict=False)  # same random VGG
    content, style = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    features = module.vgg(style)
    torch.testing.assert_close(module.net.encode_style(style, features), module.net.encode_style(style))
    calls = []
    monkeypatch.setattr(module.net.style_encoder, "forward", lambda images: calls.append(1))
    module.losses(content, style)
    assert not calls


def test_adain_output_has_the_mapped_mean_and_std():
    """AdaIN identity: per channel, mean(out) = shift and std(out) = 1 + scale of the linear map of w."""
    layer = AdaIN(channels=3, w_dim=2)
    with torch.no_grad():
        layer.to_stats.weight.copy_(torch.randn(6, 2))
        layer.to_stats.bias.copy_(torch.randn(6))
    x, w = torch.randn(4, 3, 16, 16) * 5 + 2, torch.randn(4, 2)
    out = layer(x, w)
    scale, shift = layer.to_stats(w).chunk(2, dim=1)
    torch.testing.assert_close(out.mean((2, 3)), shift, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.std((2, 3), unbiased=False), (1 + scale).abs(), atol=1e-3, rtol=1e-3)


def test_adain_with_a_zero_map_is_instance_norm_and_the_initial_map_responds_to_the_code():
    layer, x = AdaIN(4, 3), torch.randn(2, 4, 8, 8)
    w = torch.randn(2, 3)
    assert not torch.allclose(layer(x, w)[0], layer(x, w.flip(0))[0])  # the code matters from step 0
    torch.nn.init.zeros_(layer.to_stats.weight)
    torch.testing.assert_close(layer(x, w), torch.nn.functional.instance_norm(x))

class Stylise(torch.nn.Module):
    """``net``'s image alone, for tracing."""

    def __init__(self, net: VariationalStyleNet):
        super().__init__()
        self.net = net

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.net(content, style)[0]


def test_adain_res_block_and_up_blocks():
    w = torch.randn(2, 6)
    block = AdaINResBlock(8, 6)
    x = torch.randn(2, 8, 6, 6)
    assert backward_through(block, x, w).shape == x.shape
    assert_all_grads_finite(block)

    up = UpBlock(8, 4, skip_channels=4, w_dim=6)
    out = up(x, w, torch.randn(2, 4, 12, 12))
    assert out.shape == (2, 4, 12, 12)
    out.mean().backward()
    assert_all_grads_finite(up)

    plain = UpBlock(8, 4, skip_channels=0, w_dim=6)
    assert plain(x, w).shape == (2, 4, 12, 12)


@pytest.mark.parametrize("layers, out_dim", [(0, 5), (2, 16)])
def test_mapping_network(layers, out_dim):
    mapping = MappingNetwork(5, hidden=16, layers=layers)
    z = torch.randn(3, 5)
    assert mapping(z).shape == (3, out_dim) and mapping.out_dim == out_dim
    if layers == 0:
        torch.testing.assert_close(mapping(z), z)


@pytest.mark.parametrize("skips", [True, False])
def test_decoder_output_is_an_image_in_unit_range(skips):
    encoder = Encoder(width=8, downsamplings=2, max_width=16)
    decoder = Decoder(encoder.widths, style_dim=4, bottleneck_blocks=2, skips=skips, mapping_layers=1,
                      mapping_hidden=8)
    out = decoder(encoder(torch.rand(2, 3, 24, 32)), torch.randn(2, 4))
    assert out.shape == (2, 3, 24, 32)
    assert out.min() >= 0 and out.max() <= 1
    out.mean().backward()
    assert_all_grads_finite(decoder)


def test_full_network_forward_reaches_every_parameter():
    net = VariationalStyleNet(**TINY)
    output, mu, logvar = net(torch.rand(2, 3, 32, 40), torch.rand(2, 3, 48, 48))
    assert output.shape == (2, 3, 32, 40) and mu.shape == logvar.shape == (2, 4)
    (output.mean() + mu.square().mean() + logvar.mean()).backward()
    assert_all_grads_finite(net)
    assert net.multiple == 4


def test_reparameterisation_samples_in_training_and_uses_the_mean_in_eval():
    net = VariationalStyleNet(**TINY)
    mu, logvar = torch.zeros(1000, 4), torch.full((1000, 4), 2 * torch.tensor(3.0).log())  # sigma = 3
    z = net.train().sample_code(mu, logvar)
    assert abs(z.std().item() - 3.0) < 0.15 and abs(z.mean().item()) < 0.15
    assert torch.equal(net.eval().sample_code(mu, logvar), mu)
    # eval forward is deterministic: the same pair gives the same image
    content, style = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(net(content, style)[0], net(content, style)[0])


def randomize_adain(net: torch.nn.Module) -> torch.nn.Module:
    """AdaIN maps start at zero (plain IN, the code has no effect yet); give them a random style response."""
    for module in net.modules():
        if isinstance(module, AdaIN):
            torch.nn.init.normal_(module.to_stats.weight, std=0.5)
    return net


def test_decode_broadcasts_one_code_over_a_batch():
    net = randomize_adain(VariationalStyleNet(**TINY)).eval()
    content, z = torch.rand(3, 3, 16, 16), torch.randn(1, 4)
    batch = net.decode(content, z)
    torch.testing.assert_close(batch[1:2], net.decode(content[1:2], z))
    different = net.decode(content[:1], torch.randn(1, 4) * 3)
    assert not torch.allclose(batch[:1], different)


def test_eval_model_traces_to_one_graph():
    """No data-dependent Python control flow: a traced graph matches eager at another image size."""
    net = VariationalStyleNet(**TINY).eval()
    with torch.no_grad(), pytest.warns(FutureWarning):
        traced = torch.jit.trace(Stylise(net), (torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)))
        content, style = torch.rand(2, 3, 48, 64), torch.rand(2, 3, 40, 40)
        torch.testing.assert_close(traced(content, style), net(content, style)[0])


def test_schedules():
    assert lr_lambda("constant", 100)(50) == 1.0
    assert lr_lambda("inverse", 100, decay=0.01)(100) == pytest.approx(0.5)
    cosine = lr_lambda("cosine", 100, min_factor=0.1)
    assert cosine(0) == pytest.approx(1.0) and cosine(100) == pytest.approx(0.1) and cosine(50) == pytest.approx(0.55)
    assert lr_lambda("constant", 100, warmup_steps=10)(4) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        lr_lambda("linear", 10)(0)


def test_kl_weight_warms_up_linearly():
    module = VariationalStyleTransfer(net=TINY, vgg_weights="random", kl_weight=2.0, kl_warmup_steps=10)
    for step, expected in {0: 0.0, 5: 1.0, 10: 2.0, 50: 2.0}.items():
        assert module.kl_factor(step) == pytest.approx(expected)
    assert VariationalStyleTransfer(net=TINY, vgg_weights="random", kl_warmup_steps=0).kl_factor(0) == 1.0


def test_loss_terms_and_one_vgg_pass_for_both_targets(monkeypatch):
    module = VariationalStyleTransfer(net=TINY, vgg_weights="random", tv_weight=0.1)
    calls = []
    original = module.vgg.forward
    monkeypatch.setattr(module.vgg, "forward", lambda images, layers=None: calls.append(len(images)) or
                        original(images, layers))
    terms = module.losses(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert calls == [4, 2]  # content + style targets together, then the outputs
    assert {"content", "style", "kl", "tv", "loss", "mu_norm", "sigma"} <= terms.keys()
    expected = terms["content"] + terms["style"] + module.kl_factor() * terms["kl"] + 0.1 * terms["tv"]
    torch.testing.assert_close(terms["loss"], expected)


def test_structure_weight_adds_the_evaluations_structure_distance():
    torch.manual_seed(0)
    content, style = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    plain = VariationalStyleTransfer(net=TINY, vgg_weights="random")
    assert "structure" not in plain.losses(content, style)
    module = VariationalStyleTransfer(net=TINY, vgg_weights="random", structure_weight=50.0)
    module.net.load_state_dict(plain.net.state_dict())
    module.eval(), plain.eval()  # z = mu: the same output from both
    terms, without = module.losses(content, style), plain.losses(content, style)
    output = module.net.decode(content, module.net.encode_style(style)[0])
    torch.testing.assert_close(terms["structure"], structure_distance(output, content).mean())
    torch.testing.assert_close(terms["loss"], without["loss"] + 50.0 * terms["structure"])
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in module.net.decoder.parameters() if p.grad is not None)

def with_and_without(**term):
    """A tiny module with ``term`` (a loss weight) and the same network without it, in eval mode, and a batch."""
    torch.manual_seed(0)
    content, style = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    plain = VariationalStyleTransfer(net=TINY, vgg_weights="random")
    module = VariationalStyleTransfer(net=TINY, vgg_weights="random", **term)
    module.net.load_state_dict(plain.net.state_dict())
    module.eval(), plain.eval()
    return module, plain, content, style

def test_terms_are_configured_by_name_and_the_top_level_weights_still_set_them():
    module, plain, content, style = with_and_without(terms={"structure": {"weight": 50.0}, "tv": {"weight": 0.0}})
    legacy = VariationalStyleTransfer(net=TINY, vgg_weights="random", structure_weight=50.0)
    legacy.net.load_state_dict(module.net.state_dict())
    legacy.eval()
    terms = module.losses(content, style)
    assert [term.name for term in module.terms] == ["structure"] and "tv" not in terms
    torch.testing.assert_close(terms["loss"], legacy.losses(content, style)["loss"])
    switched_off = VariationalStyleTransfer(net=TINY, vgg_weights="random", terms={"structure": {"weight": 5.0}},
                                            structure_weight=0.0)
    assert switched_off.terms == []  # a top-level weight that is set wins: model.structure_weight=0 turns it off
    with pytest.raises(ValueError, match="unknown loss terms \\['patch'\\]"):
        VariationalStyleTransfer(net=TINY, vgg_weights="random", terms={"patch": {"weight": 1.0}})


def test_stability_term_is_the_outputs_change_relative_to_a_faint_smooth_change_of_the_photo(monkeypatch):
    torch.manual_seed(0)
    change = low_frequency_change(torch.rand(3, 3, 192, 256))
    assert change.shape == (3, 1, 192, 256) and float(change.abs().max()) <= 0.05 + 1e-6
    for step in (change.diff(dim=2), change.diff(dim=3)):  # smooth: at most 2 x 0.05 over a 16 px cell
        assert float(step.abs().max()) <= 0.1 / 16 + 1e-6
    module, plain, content, style = with_and_without(stability_weight=3.0)
    fixed = low_frequency_change(content)
    monkeypatch.setattr("nststyle.lit.terms.low_frequency_change", lambda images: fixed)
    terms, without = module.losses(content, style), plain.losses(content, style)
    code = module.net.encode_style(style)[0]
    expected = ((module.net.decode((content + fixed).clamp(0, 1), code) - module.net.decode(content, code)).square().mean()
                / fixed.square().mean())
    torch.testing.assert_close(terms["stability"], expected)
    torch.testing.assert_close(terms["loss"], without["loss"] + 3.0 * terms["stability"])
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in module.net.decoder.parameters() if p.grad is not None)


def test_invented_edges_term_adds_the_flat_region_edges_of_the_output_and_trains_the_decoder():
    module, plain, content, style = with_and_without(invented_edges_weight=5.0)
    terms, without = module.losses(content, style), plain.losses(content, style)
    code = module.net.encode_style(style)[0]
    output = module.recolour(module.net.decode(content, code), style)
    expected = invented_edges(output.float(), content, per="photo").mean()
    torch.testing.assert_close(terms["invented_edges"], expected)
    torch.testing.assert_close(terms["loss"], without["loss"] + 5.0 * terms["invented_edges"])
    terms["loss"].backward()
    grads = [p.grad for p in module.net.decoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # the photo's own scale: painting more edges where the photo has them does not lower it, unlike the figure
    photo = torch.full((1, 3, 64, 64), 0.5)
    photo[..., 32:, :] = (torch.arange(64) // 8 % 2).float() * 0.8 + 0.1
    busier = photo.clone()
    busier[..., 32:, :] = 1 - busier[..., 32:, :] * 0.2  # weaker edges where the photo has them
    flat_painted = photo.clone()
    flat_painted[..., 8:24, 16:48] = 0.9  # a shape in the flat half
    assert invented_edges(flat_painted, photo, per="photo") > invented_edges(photo, photo, per="photo")
    torch.testing.assert_close(invented_edges(busier, photo, per="photo"), invented_edges(photo, photo, per="photo"))


def test_a_nonfinite_loss_skips_the_update(monkeypatch):
    module = VariationalStyleTransfer(net=TINY, vgg_weights="random")
    batch = (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert torch.is_tensor(module.training_step(batch, 0))
    finite = module.losses
    monkeypatch.setattr(module, "losses", lambda c, s: {**finite(c, s), "loss": torch.tensor(float("nan"))})
    with pytest.warns(UserWarning):  # self.log without a trainer
        assert module.training_step(batch, 0) is None


def test_nonfinite_gradients_are_dropped_before_the_step():
    module = VariationalStyleTransfer(net=TINY, vgg_weights="random")
    optimizer = torch.optim.Adam(module.net.parameters(), lr=1e-2)
    module.losses(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))["loss"].backward()
    assert not drop_nonfinite_gradients(module)  # finite: kept
    before = [p.detach().clone() for p in module.net.parameters()]
    next(module.net.parameters()).grad[0] = float("inf")
    with pytest.warns(UserWarning):  # self.log without a trainer
        assert drop_nonfinite_gradients(module)
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, module.net.parameters()))  # no update, no NaN


def skimage_pair(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    def tensor(image):
        image = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
        return torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
    return tensor(skdata.chelsea()), tensor(skdata.coffee())


@pytest.mark.slow
def test_tiny_model_overfits_one_pair():
    """The whole objective (caffe VGG content + Gram style + KL) falls by half on one pair within 300 steps."""
    torch.manual_seed(0)
    content, style = skimage_pair(48)
    module = VariationalStyleTransfer(net=dict(TINY, width=16, max_width=32), vgg_weights="caffe",
                                      kl_weight=1e3, kl_warmup_steps=0)
    optimizer = torch.optim.Adam(module.net.parameters(), lr=2e-3)
    start, history = time.perf_counter(), []
    for _ in range(300):
        loss = module.losses(content, style)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        if history[-1] <= 0.5 * history[0] and len(history) >= 20:
            break
    first, last = history[0], sum(history[-5:]) / len(history[-5:])
    assert last <= 0.5 * first, f"loss {first:.4g} -> {last:.4g} after {len(history)} steps"
    assert time.perf_counter() - start < 120


def test_train_only_updates_the_named_submodules_and_keeps_the_vgg_frozen():
    module = VariationalStyleTransfer(net={**TINY, "style_encoder": "vgg", "style_vgg_weights": "random"},
                                      vgg_weights="random", train_only=["style_encoder", "decoder.mapping"])
    optimizer = torch.optim.Adam([p for p in module.net.parameters() if p.requires_grad], lr=1e-2)
    before = {name: p.detach().clone() for name, p in module.net.named_parameters()}
    module.losses(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))["loss"].backward()
    optimizer.step()
    changed = {name for name, p in module.net.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith(("style_encoder.head.", "decoder.mapping.")) for name in changed)
    assert any(name.startswith("decoder.mapping.") for name in changed)
    assert not any(p.requires_grad for p in module.net.style_encoder.vgg.parameters())
    with pytest.raises(ValueError, match="no submodule decoder.mapper"):
        VariationalStyleTransfer(net=TINY, vgg_weights="random", train_only=["decoder.mapper"])


def test_colour_shift_scores_the_output_with_the_paintings_mean_colour_and_goes_on_the_checkpoint(monkeypatch):
    torch.manual_seed(0)
    module = VariationalStyleTransfer(net=TINY, vgg_weights="random", colour_shift=1.0)
    scored = []
    original = module.vgg.forward
    monkeypatch.setattr(module.vgg, "forward", lambda images, layers=None: scored.append(images) or
                        original(images, layers))
    # mid-grey photos and paintings of one mid-range colour: the shift moves no pixel out of [0, 1]
    content = 0.4 + 0.2 * torch.rand(2, 3, 32, 32)
    style = torch.tensor([0.3, 0.5, 0.6]).view(1, 3, 1, 1) + 0.05 * torch.rand(2, 3, 32, 32)
    module.losses(content, style)["loss"].backward()
    output = scored[-1]
    assert output.requires_grad  # the loss reaches the network through the shift
    assert 0 < output.min() and output.max() < 1  # nothing clamped, so the means match exactly
    torch.testing.assert_close(output.mean((-2, -1)), style.mean((-2, -1)), atol=1e-5, rtol=0)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.decoder.parameters())
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["nststyle"]["colour_shift"] == 1.0  # so inference applies the shift it was trained through
    plain_checkpoint = {"state_dict": VariationalStyleTransfer(net=TINY, vgg_weights="random").state_dict()}
    VariationalStyleTransfer(net=TINY, vgg_weights="random").on_save_checkpoint(plain_checkpoint)
    assert "colour_shift" not in plain_checkpoint["nststyle"]


def test_colour_match_scores_the_output_with_the_paintings_colour_covariance_and_goes_on_the_checkpoint(monkeypatch):
    torch.manual_seed(0)
    module = VariationalStyleTransfer(net=TINY, vgg_weights="random", colour_shift=1.0, colour_match=1.0)
    scored = []
    original = module.vgg.forward
    monkeypatch.setattr(module.vgg, "forward", lambda images, layers=None: scored.append(images) or
                        original(images, layers))
    content = 0.4 + 0.2 * torch.rand(2, 3, 32, 32)
    # paintings of correlated channels around a mid-range colour: the match moves no pixel out of [0, 1]
    base = torch.rand(2, 1, 32, 32)
    style = torch.tensor([0.3, 0.5, 0.6]).view(1, 3, 1, 1) + 0.2 * base * torch.tensor([1.0, 0.5, -0.5]).view(1, 3, 1, 1)
    module.losses(content, style)["loss"].backward()
    output = scored[-1]
    assert output.requires_grad and 0 < output.min() and output.max() < 1
    for got, want in zip(colour_statistics(output.detach()), colour_statistics(style)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-2)  # each output has its painting's mean and covariance
    grads = [p.grad for p in module.net.decoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["nststyle"]["colour_match"] == 1.0  # inference recolours as training scored


def test_the_card_of_inference_settings_goes_on_the_checkpoint(tmp_path):
    module = VariationalStyleTransfer(net=TINY, vgg_weights="random", card={"style_size": 48, "colour_shift": 0.5})
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "run.ckpt")
    stylizer = load_stylizer(tmp_path / "run.ckpt", "cpu")  # as a shipped model's card would say
    assert stylizer.style_size == 48 and stylizer.colour_shift == 0.5
    plain_checkpoint = {"state_dict": VariationalStyleTransfer(net=TINY, vgg_weights="random").state_dict()}
    VariationalStyleTransfer(net=TINY, vgg_weights="random").on_save_checkpoint(plain_checkpoint)
    assert "style_size" not in plain_checkpoint["nststyle"] and "colour_shift" not in plain_checkpoint["nststyle"]
    with pytest.raises(ValueError, match="unknown card entries \\['style_szie'\\]"):
        VariationalStyleTransfer(net=TINY, vgg_weights="random", card={"style_szie": 48})


def test_style_code_scale_feeds_the_encoder_a_smaller_painting_and_scores_against_the_full_one(monkeypatch):
    torch.manual_seed(0)
    module = VariationalStyleTransfer(net={**TINY, "style_encoder": "vgg"}, vgg_weights="random",
                                      style_code_scale=0.5)
    read, scored = [], []
    original_net, original_loss = module.net.encode_style, module.style_loss.set_target
    monkeypatch.setattr(module.net, "encode_style", lambda style, features=None: read.append(
        (style.shape, None if features is None else next(iter(features.values())).shape))
        or original_net(style, features))
    monkeypatch.setattr(module.style_loss, "set_target", lambda features: scored.append(
        next(iter(features.values())).shape) or original_loss(features))
    content, style = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 64, 64)
    terms = module.losses(content, style)
    terms["loss"].backward()
    (code_shape, feature_shape), = read
    assert code_shape[-2:] == (32, 32) and feature_shape[-1] == 32  # Es: the painting at half its size
    assert scored[0][-1] == 64  # the loss: the painting as it came
    assert torch.isfinite(terms["loss"]) and any(p.grad is not None for p in module.net.style_encoder.parameters())

@pytest.mark.parametrize("padding", ["reflect", "zeros"])
def test_code_gradients_are_the_same_in_channels_last(padding):
    """What the refinement differentiates under precision=bf16 (channels-last networks): torch's instance norm backward
    goes wrong for a one-sample batch with a channels-last gradient, which a zero-padded convolution hands it."""
    torch.manual_seed(0)
    net = VariationalStyleNet(**{**TINY, "padding": padding, "rgb_kernel": 3}).double().eval()
    photo = torch.rand(1, 3, 24, 32, dtype=torch.float64)
    weights = torch.randn(1, 3, 24, 32, dtype=torch.float64)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        net.to(memory_format=layout)
        w = torch.randn(1, net.decoder.mapping.out_dim, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1)).requires_grad_()
        features = [f.detach() for f in net.content_encoder(photo.contiguous(memory_format=layout))]
        (net.decoder.synthesize(features, w) * weights).sum().backward()
        grads.append(w.grad)
    torch.testing.assert_close(grads[1], grads[0])
