"""The local style figure (nststyle.metrics.local_style_distance): a plain reference, its identities, that it
sees flat shapes which the global statistics let pass, and its use as a training term."""
import torch

from nststyle.lit.variational import VariationalStyleTransfer
from nststyle.metrics import LOCAL_LAYERS, flat_window_share, local_style_distance, relative_gap, window_statistics

TINY = dict(style_dim=4, width=8, max_width=16, downsamplings=2, bottleneck_blocks=1, mapping_layers=1,
            mapping_hidden=16)


def reference_gap(output: torch.Tensor, painting: torch.Tensor, window: int = 8, stride: int = 4) -> float:
    """The definition with loops: one sample, ``C x H x W`` maps."""
    def windows(x):
        found = []
        for top in range(0, x.shape[1] - window + 1, stride):
            for left in range(0, x.shape[2] - window + 1, stride):
                patch = x[:, top:top + window, left:left + window].flatten(1)
                found.append((patch.mean(1), patch.std(1, unbiased=False)))
        return found
    scale = (painting.flatten(1).mean(1).square() + painting.flatten(1).std(1, unbiased=False).square()).sum()
    gap = lambda a, b: float(((a[0] - b[0]).square().sum() + (a[1] - b[1]).square().sum()) / scale)
    out, paint = windows(output), windows(painting)
    forward = sum(min(gap(o, p) for p in paint) for o in out) / len(out)
    backward = sum(min(gap(o, p) for o in out) for p in paint) / len(paint)
    return 0.5 * (forward + backward)


def features(batch: int, channels: int = 6, size: int = 20) -> dict[str, torch.Tensor]:
    return {name: torch.rand(batch, channels, size, size + 4) for name in LOCAL_LAYERS}


def test_matches_the_definition_computed_with_loops():
    torch.manual_seed(0)
    output, painting = features(2), features(2)
    figure = local_style_distance(output, painting)
    for sample in range(2):
        expected = sum(reference_gap(output[n][sample], painting[n][sample]) for n in LOCAL_LAYERS) / len(LOCAL_LAYERS)
        assert abs(float(figure[sample]) - expected) < 1e-5 * max(1.0, expected)


def test_zero_for_the_painting_itself_and_symmetric_in_its_windows():
    torch.manual_seed(1)
    painting = features(1)
    assert float(local_style_distance(painting, painting)) < 1e-6
    # the output's windows rearranged (the map flipped): every window still finds its twin
    flipped = {name: value.flip(-1).flip(-2) for name, value in painting.items()}
    assert float(local_style_distance(flipped, painting)) < 1e-6


def test_flat_shapes_with_the_paintings_global_statistics_score_far_worse_than_its_texture():
    torch.manual_seed(2)
    texture = torch.rand(1, 8, 48, 48)
    # 16 x 16 blocks, each flat at a value drawn from the painting: about the same channel means and stds overall
    blocks = texture[..., ::16, ::16].repeat_interleave(16, -1).repeat_interleave(16, -2)
    other_texture = torch.rand(1, 8, 48, 48)
    painting = {name: texture for name in LOCAL_LAYERS}
    global_gap = lambda x: float(relative_gap(window_statistics(x, 48)[:, 0], window_statistics(texture, 48)[:, 0]))
    assert global_gap(blocks) < 0.1
    blobs = float(local_style_distance({name: blocks for name in LOCAL_LAYERS}, painting))
    same_texture = float(local_style_distance({name: other_texture for name in LOCAL_LAYERS}, painting))
    assert blobs > 10 * same_texture


def test_the_training_term_adds_the_local_figure_and_trains_the_decoder():
    torch.manual_seed(0)
    content, style = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    plain = VariationalStyleTransfer(net=TINY, vgg_weights="random")
    module = VariationalStyleTransfer(net=TINY, vgg_weights="random", local_style_weight=7.0)
    module.net.load_state_dict(plain.net.state_dict())
    module.eval(), plain.eval()
    terms, without = module.losses(content, style), plain.losses(content, style)
    code = module.net.encode_style(style)[0]
    output = module.recolour(module.net.decode(content, code), style)
    expected = local_style_distance(module.vgg(output), module.vgg(style)).mean()
    torch.testing.assert_close(terms["local_style"], expected)
    torch.testing.assert_close(terms["loss"], without["loss"] + 7.0 * terms["local_style"])
    terms["loss"].backward()
    grads = [p.grad for p in module.net.decoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_flat_share_is_a_quarter_for_the_painting_and_high_for_flat_blocks():
    torch.manual_seed(3)
    texture = torch.rand(1, 8, 48, 48) * torch.linspace(0.2, 1.0, 48)  # texture of varying strength
    painting = {name: texture for name in LOCAL_LAYERS}
    own = float(flat_window_share(painting, painting))
    assert abs(own - 0.25) < 0.05
    blocks = texture[..., ::16, ::16].repeat_interleave(16, -1).repeat_interleave(16, -2)
    assert float(flat_window_share({name: blocks for name in LOCAL_LAYERS}, painting)) > 0.5
    busier = {name: torch.rand(1, 8, 48, 48) for name in LOCAL_LAYERS}  # strong texture everywhere
    assert float(flat_window_share(busier, painting)) < own
