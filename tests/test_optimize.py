import pytest
import torch

from nststyle.features import CONTENT_LAYER, STYLE_LAYERS, VGGEncoder
from nststyle.losses import style_loss
from nststyle.optimize import History, converged, stylize_by_optimization
from nststyle.swap import style_swap

SIZE = 32


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return VGGEncoder(STYLE_LAYERS + (CONTENT_LAYER,), weights="random")


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(1)
    # a smooth "photo" and a stripy "painting" of a different size
    ramp = torch.linspace(0, 1, SIZE)
    content = torch.stack([ramp[None].expand(SIZE, SIZE), ramp[:, None].expand(SIZE, SIZE),
                           torch.full((SIZE, SIZE), 0.3)])
    stripes = (torch.arange(40) // 4 % 2).float()
    style = torch.stack([stripes[None].expand(56, 40), 1 - stripes[None].expand(56, 40), torch.rand(56, 40, generator=generator)])
    return content, style


@pytest.mark.parametrize("loss,iterations", [("gram", 8), ("mmd_linear", 8), ("mmd_poly", 8), ("bn", 8), ("w2", 5),
                                             ("bn+mmd_poly", 8), ("swap", 8)])
def test_loss_decreases_and_output_is_an_image(encoder, images, loss, iterations):
    content, style = images
    # rel_tol=0: run all iterations (the random-weight Gram loss creeps down at first)
    out, history = stylize_by_optimization(content, style, loss=loss, max_iter=iterations, rel_tol=0, encoder=encoder,
                                           progress=False)
    assert out.shape == content.shape and out.dtype == content.dtype
    assert 0 <= out.min() and out.max() <= 1 and not torch.equal(out, content)
    totals = history.terms["total"]
    assert history.iterations == len(totals) == iterations
    assert totals[-1] < 0.99 * totals[0] and min(totals) == min(totals[-3:])
    assert all(torch.isfinite(torch.tensor(values)).all() for values in history.terms.values())


def test_gaussian_mmd_moves_the_feature_distribution_towards_the_style(encoder, images):
    # the linear-time Gaussian estimate is stochastic (new pairs each call): judge the result by a
    # deterministic distribution distance instead of its own noisy values
    content, style = images
    out, _ = stylize_by_optimization(content, style, loss="mmd_gaussian", max_iter=8, encoder=encoder, progress=False,
                                     loss_options={"max_pairs": 8192})
    judge = style_loss("bn", scale=1.0).set_target(encoder(style[None]))
    assert judge(encoder(out[None])) < 0.9 * judge(encoder(content[None]))


def test_swap_objective_reconstructs_the_swapped_features(encoder, images):
    content, style = images
    out, history = stylize_by_optimization(content, style, loss="swap", tv_weight=0, max_iter=10, encoder=encoder,
                                           progress=False)
    assert set(history.terms) == {"swap", "total"}
    target = style_swap(encoder(content[None], ["relu3_1"])["relu3_1"], encoder(style[None], ["relu3_1"])["relu3_1"])
    distance = lambda image: (encoder(image[None], ["relu3_1"])["relu3_1"] - target).square().mean()
    assert distance(out) < 0.5 * distance(content)
    torch.testing.assert_close(distance(content), torch.tensor(history.terms["swap"][0]))


def test_content_free_style_reconstruction_starts_from_noise(encoder, images):
    content, style = images
    out, history = stylize_by_optimization(content, style, loss="bn", content_weight=0, max_iter=6, encoder=encoder,
                                           progress=False)
    assert "content" not in history.terms
    assert history.terms["total"][-1] < 0.9 * history.terms["total"][0]
    # started from uniform noise, not from the photo: far from the smooth content
    assert (out - content).abs().mean() > 0.1


def test_init_from_an_image_of_another_size_and_batched_input(encoder, images):
    content, style = images
    init = torch.zeros(3, 30, 20)
    out, history = stylize_by_optimization(content[None], style, loss="mmd_linear", init=init, max_iter=1,
                                           encoder=encoder, progress=False)
    assert out.shape == (1, 3, SIZE, SIZE)
    # the first recorded loss is at the initial image, here the (resized) black one
    features = lambda image: encoder(image[None], [CONTENT_LAYER])[CONTENT_LAYER]
    expected = (features(torch.zeros(3, SIZE, SIZE)) - features(content)).square().mean()
    assert history.terms["content"][0] == pytest.approx(expected.item(), rel=1e-5)


def test_max_step_bounds_every_pixel_move(encoder, images):
    content, style = images
    out, _ = stylize_by_optimization(content, style, loss="gram", max_iter=4, max_step=1e-3, encoder=encoder,
                                     progress=False)
    assert (out - content).abs().max() <= 4e-3 + 1e-6


def test_preserve_color_and_adam_run(encoder, images):
    content, style = images
    plain, _ = stylize_by_optimization(content, style, loss="bn", optimizer="adam", max_iter=4, encoder=encoder,
                                       progress=False)
    kept, history = stylize_by_optimization(content, style, loss="bn", optimizer="adam", max_iter=4, encoder=encoder,
                                            progress=False, preserve_color=True)
    assert history.terms["total"][-1] < history.terms["total"][0]
    assert not torch.allclose(plain, kept)  # the style target changed colour


def test_stopping_rule():
    assert not converged([10, 9.99, 9.98], rel_tol=0.005, patience=3)  # too short to judge
    assert converged([10, 9.99, 9.98, 9.97], rel_tol=0.005, patience=3)
    assert not converged([10, 9.99, 5, 4.99], rel_tol=0.005, patience=3)  # one big drop within the window
    assert converged([-2.0, -2.001, -2.002], rel_tol=0.005, patience=2)


def test_optimisation_stops_when_the_loss_settles(encoder, images):
    content, style = images
    # rel_tol=1 accepts any change below 100 %: stop as soon as the patience window is full
    _, history = stylize_by_optimization(content, style, loss="bn", max_iter=50, rel_tol=1.0, patience=2,
                                         encoder=encoder, progress=False)
    assert history.stopped_early and history.iterations == 3
    seen = []
    _, history = stylize_by_optimization(content, style, loss="bn", max_iter=3, rel_tol=0.0, encoder=encoder,
                                         progress=False, callback=lambda i, image, values: seen.append((i, values)))
    assert not history.stopped_early and history.iterations == 3 and len(history.step_seconds) == 3
    assert [i for i, _ in seen] == [1, 2, 3] and [v["total"] for _, v in seen] == history.terms["total"]


def test_encoder_without_the_needed_layers_is_rejected(images):
    content, style = images
    with pytest.raises(ValueError, match="relu4_2"):
        stylize_by_optimization(content, style, loss="bn", encoder=VGGEncoder(["relu3_1"], weights="random"),
                                progress=False)


def test_history_counts_iterations():
    history = History()
    history.append({"total": 1.0, "style": 1.0})
    history.append({"total": 0.5, "style": 0.5})
    assert history.iterations == 2 and history.terms["style"] == [1.0, 0.5]
