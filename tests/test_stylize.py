"""Checkpoint -> nststyle.stylize -> infer.py: all four modes, their identities, and one-line errors."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from skimage import data as skdata

import nststyle.stylizers.variational
from nststyle.images import (colour_statistics, load_image, match_color, match_colour_statistics, mean_colour,
                             shift_mean_colour)
from nststyle.metrics import StyleMetrics, structure_distance
from nststyle.refine import refine_photos, refine_style_code
from nststyle.stylize import STYLIZERS, StylizeError, load_stylizer, slerp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import infer  # noqa: E402

@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    photos = folder / "photos"
    photos.mkdir()
    paths = {}
    for name, array in [("chelsea", skdata.chelsea()), ("coffee", skdata.coffee()), ("astronaut", skdata.astronaut())]:
        target = photos / f"{name}.png" if name != "astronaut" else folder / "astronaut.jpg"
        Image.fromarray(array).resize((72, 56)).save(target)
        paths[name] = target
    paths["photos"] = photos
    paths["rocket"] = folder / "rocket.png"
    Image.fromarray(skdata.rocket()).resize((64, 64)).save(paths["rocket"])
    return paths


def infer_cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("infer", overrides=list(overrides))


def run(*overrides) -> str:
    return infer.METHODS["feedforward"](infer_cfg("method=feedforward", "device=cpu", *overrides))


def saved(path) -> torch.Tensor:
    return load_image(path)[None]


def test_load_stylizer_builds_the_registered_class(ckpt):
    stylizer = load_stylizer(ckpt, "cpu")
    assert type(stylizer) is STYLIZERS["variational"] and stylizer.multiple == 4
    assert not stylizer.net.training
    with pytest.raises(StylizeError, match="patch_size do\\(es\\) not apply to a 'variational' checkpoint"):
        run(f"ckpt={ckpt}", "content=x.jpg", "style=y.jpg", "patch_size=5")  # a swap option, refused before any I/O
    with pytest.raises(StylizeError, match="swap_mode do\\(es\\) not apply to a 'variational' checkpoint"):
        run(f"ckpt={ckpt}", "content=x.jpg", "style=y.jpg", "swap_mode=approximate")


def test_stylize_one_pair_writes_exactly_output(ckpt, images, tmp_path):
    out = tmp_path / "out.png"
    summary = run(f"ckpt={ckpt}", f"content={images['chelsea']}", f"style={images['rocket']}", f"output={out}")
    assert summary.startswith(f"stylize: wrote 1 image(s) to {out} in ") and summary.endswith(" s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    result = saved(out)
    assert result.shape == (1, 3, 56, 72)  # already a multiple of 4: size kept
    stylizer = load_stylizer(ckpt, "cpu", precision="auto")
    expected = stylizer.stylize(saved(images["chelsea"]), saved(images["rocket"]))
    assert (result - expected).abs().max() <= 1 / 255 + 1e-6  # PNG rounding only


def test_stylize_folder_times_styles_writes_all_pairs_and_a_grid(ckpt, images, tmp_path):
    out = tmp_path / "result.jpg"
    summary = run(f"ckpt={ckpt}", f"content={images['photos']}", f"style=[{images['rocket']},{images['astronaut']}]",
                  f"output={out}", "max_size=48", "grid_size=32")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["result_chelsea_astronaut.jpg", "result_chelsea_rocket.jpg", "result_coffee_astronaut.jpg",
                     "result_coffee_rocket.jpg", "result_grid.jpg"]
    assert "wrote 4 image(s)" in summary and "contact sheet" in summary
    assert Image.open(tmp_path / "result_coffee_rocket.jpg").size == (48, 36)  # max_size, multiple of 4
    assert Image.open(tmp_path / "result_grid.jpg").size[1] == 3 * 32 + 4 * 2  # header row + 2 contents


def test_alpha_zero_uses_the_contents_own_code_and_styles_differ(ckpt, images, tmp_path):
    stylizer = load_stylizer(ckpt, "cpu", precision="auto")
    content, style = saved(images["chelsea"]), saved(images["rocket"])
    own = stylizer.decode(content, stylizer.style_code(content))
    torch.testing.assert_close(stylizer.stylize(content, style, alpha=0.0), own)
    assert (stylizer.stylize(content, style) - own).abs().mean() > 1e-4  # 0 if the code were ignored
    half = stylizer.decode(content, 0.5 * (stylizer.style_code(content) + stylizer.style_code(style)))
    torch.testing.assert_close(stylizer.stylize(content, style, alpha=0.5), half)


def test_preserve_color_recolours_the_style_first(ckpt, images, tmp_path):
    out = tmp_path / "kept.png"
    run(f"ckpt={ckpt}", f"content={images['chelsea']}", f"style={images['rocket']}", f"output={out}",
        "preserve_color=true")
    stylizer, content, style = load_stylizer(ckpt, "cpu", precision="auto"), saved(images["chelsea"]), saved(images["rocket"])
    expected = stylizer.stylize(content, match_color(style, content))
    assert (saved(out) - expected).abs().max() <= 1 / 255 + 1e-6


def test_mix_with_one_hot_weights_is_that_style(ckpt, images, tmp_path):
    out = tmp_path / "mix.png"
    summary = run(f"ckpt={ckpt}", "mode=mix", f"content={images['chelsea']}",
                  f"style=[{images['rocket']},{images['astronaut']}]", "weights=[0,2]", f"output={out}")
    assert summary.startswith("mix: wrote 1 image(s)") and (tmp_path / "mix_grid.jpg").exists()
    stylizer = load_stylizer(ckpt, "cpu", precision="auto")
    astronaut = load_image(images["astronaut"], max_size=512)[None]
    expected = stylizer.stylize(saved(images["chelsea"]), astronaut)
    assert (saved(out) - expected).abs().max() <= 1 / 255 + 1e-6
    with pytest.raises(StylizeError, match="weight"):
        run(f"ckpt={ckpt}", "mode=mix", f"content={images['chelsea']}", f"style={images['rocket']}",
            "weights=[1,1]", f"output={out}")


def test_sample_draws_distinct_reproducible_styles(ckpt, images, tmp_path):
    summary = run(f"ckpt={ckpt}", "mode=sample", "count=3", "seed=7", f"content={images['chelsea']}",
                  f"output={tmp_path / 's.png'}")
    files = [tmp_path / f"s_sample{i}.png" for i in range(3)]
    assert all(f.exists() for f in files) and (tmp_path / "s_grid.jpg").exists() and "wrote 3 image(s)" in summary
    a, b = saved(files[0]), saved(files[1])
    assert (a - b).abs().mean() > 1e-4
    again = load_stylizer(ckpt, "cpu", precision="auto").sample(saved(images["chelsea"]), 3, seed=7)
    assert (again[1] - b).abs().max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolate_ends_at_both_styles(ckpt, images, tmp_path, method):
    run(f"ckpt={ckpt}", "mode=interpolate", "steps=4", f"interpolation={method}", f"content={images['chelsea']}",
        f"style=[{images['rocket']},{images['astronaut']}]", f"output={tmp_path / 'i.png'}")
    steps = [saved(tmp_path / f"i_step{i}.png") for i in range(4)]
    assert (tmp_path / "i_grid.jpg").exists()
    stylizer, content = load_stylizer(ckpt, "cpu", precision="auto"), saved(images["chelsea"])
    first = stylizer.stylize(content, saved(images["rocket"]))
    last = stylizer.stylize(content, load_image(images["astronaut"], max_size=512)[None])
    assert (steps[0] - first).abs().max() <= 1 / 255 + 1e-5
    assert (steps[-1] - last).abs().max() <= 1 / 255 + 1e-5
    assert (steps[1] - steps[0]).abs().mean() > 0


def test_slerp_keeps_the_norm_of_equal_norm_codes():
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    middle = slerp(a, b, 0.5)
    torch.testing.assert_close(middle.norm(), torch.tensor(3.0))
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, a, 0.3), a)  # parallel codes: no division by zero


def test_interpolate_needs_two_styles(ckpt, images, tmp_path):
    with pytest.raises(StylizeError, match="exactly two style images"):
        run(f"ckpt={ckpt}", "mode=interpolate", f"content={images['chelsea']}", f"style={images['rocket']}",
            f"output={tmp_path / 'x.png'}")


def test_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(StylizeError, match="not an nststyle checkpoint"):
        load_stylizer(bogus)
    torch.save({"state_dict": {}, "nststyle": {"kind": "diffusion"}}, bogus)
    with pytest.raises(StylizeError, match="'diffusion' model"):
        load_stylizer(bogus)


def cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / "infer.py"), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_end_to_end_and_one_line_errors(ckpt, images, tmp_path):
    out = tmp_path / "cli.png"
    ok = cli(f"ckpt={ckpt}", f"content={images['chelsea']}", f"style={images['rocket']}", f"output={out}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.startswith("stylize: wrote 1 image(s)") and out.exists()
    bad = cli(f"ckpt={tmp_path / 'missing.ckpt'}", f"content={images['chelsea']}", f"style={images['rocket']}",
              f"output={tmp_path / 'bad.png'}")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"error: checkpoint not found: {tmp_path / 'missing.ckpt'} "
                                               "(a path, or a shipped model: variational, inverse, default)"]


def test_missing_content_is_an_image_error(ckpt, images, tmp_path):
    from nststyle.images import ImageError

    with pytest.raises(ImageError, match="image not found: /nonexistent.jpg"):
        run(f"ckpt={ckpt}", "content=/nonexistent.jpg", f"style={images['rocket']}", f"output={tmp_path / 'x.png'}")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # a minute of torch.compile
def test_compiled_networks_give_the_same_images(ckpt, images):
    """compile=True hands the networks to torch.compile: same outputs (to float32 rounding of fused
    kernels), and the modules are really wrapped."""
    photo, painting = load_image(images["chelsea"])[None], load_image(images["rocket"])[None]
    eager = load_stylizer(ckpt, "cpu")
    compiled = load_stylizer(ckpt, "cpu", compile=True)
    assert all(network._compiled_call_impl is not None for network in compiled.networks())
    torch.testing.assert_close(compiled.stylize(photo, painting), eager.stylize(photo, painting), atol=1e-4, rtol=1e-4)


def test_colour_shift_moves_the_results_mean_colour_to_the_paintings(ckpt, tmp_path):
    torch.manual_seed(0)
    content, style = 0.3 + 0.4 * torch.rand(1, 3, 64, 48), 0.2 + 0.3 * torch.rand(1, 3, 40, 40)
    plain = load_stylizer(ckpt, "cpu")
    raw = plain.stylize_large(content, style, tile=None)
    assert plain.colour_shift == 0 and torch.equal(raw, plain.stylize(content, style))  # off unless asked for
    for strength in (1.0, 0.5):
        shifted = load_stylizer(ckpt, "cpu", colour_shift=strength).stylize_large(content, style, tile=None)
        expected = (raw + strength * (mean_colour(style) - mean_colour(raw))).clamp(0, 1)
        torch.testing.assert_close(shifted, expected)
    gap = lambda image: (mean_colour(image) - mean_colour(style)).abs().max()  # noqa: E731
    assert gap(load_stylizer(ckpt, "cpu", colour_shift=1.0).stylize_large(content, style, tile=None)) < 0.2 * gap(raw)

    # alpha < 1 aims at the blend of the painting's and the photo's colours, as the style is blended
    stylizer = load_stylizer(ckpt, "cpu", colour_shift=1.0)
    half = stylizer.stylize_large(content, style, alpha=0.5, tile=None)
    target = 0.5 * mean_colour(style) + 0.5 * mean_colour(content)
    torch.testing.assert_close(half, shift_mean_colour(plain.stylize_large(content, style, alpha=0.5, tile=None), target))

    # tiles get one shift, computed on the whole result
    big = 0.3 + 0.4 * torch.rand(1, 3, 96, 80)
    tiled = stylizer.stylize_large(big, style, tile=64, overlap=16, progress=False)
    torch.testing.assert_close(tiled, shift_mean_colour(
        plain.stylize_large(big, style, tile=64, overlap=16, progress=False), mean_colour(style)))

    # the model's card sets the default; an explicit value wins
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    checkpoint["nststyle"]["colour_shift"] = 0.7
    torch.save(checkpoint, tmp_path / "card.ckpt")
    assert load_stylizer(tmp_path / "card.ckpt", "cpu").colour_shift == 0.7
    assert load_stylizer(tmp_path / "card.ckpt", "cpu", colour_shift=0).colour_shift == 0


def test_linear_colour_transfer_gives_the_targets_mean_and_covariance_and_blends_linearly():
    torch.manual_seed(0)
    mixing = torch.tensor([[0.5, 0.2, 0.0], [0.1, 0.4, 0.1], [0.0, 0.2, 0.3]])
    source = (0.5 + 0.3 * torch.einsum("ij,bjhw->bihw", mixing, torch.randn(1, 3, 80, 60))).clamp(0, 1)
    target = 0.3 + 0.2 * torch.rand(1, 3, 50, 50)
    matched = match_color(source, target)
    for got, want in zip(colour_statistics(matched), colour_statistics(target)):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-3)
    # a plain reference: mu_t + C_t^1/2 C_s^-1/2 (x - mu_s) with scipy's matrix square roots, in float64
    scipy_linalg = pytest.importorskip("scipy.linalg")
    (mu_s, cov_s), (mu_t, cov_t) = colour_statistics(source), colour_statistics(target)
    transfer = torch.from_numpy(scipy_linalg.sqrtm(cov_t[0].numpy()).real @ scipy_linalg.inv(
        scipy_linalg.sqrtm(cov_s[0].numpy()).real))
    reference = (transfer @ (source.double().reshape(3, -1) - mu_s[0]) + mu_t[0]).reshape(source.shape).clamp(0, 1)
    torch.testing.assert_close(matched, reference.float(), atol=1e-5, rtol=0)
    # strength 0 changes nothing, strength t is the per-pixel blend
    torch.testing.assert_close(match_colour_statistics(source, mu_t, cov_t, 0.0), source, atol=1e-6, rtol=0)
    blended = match_colour_statistics(source, mu_t, cov_t, 0.4)
    unclamped = (blended > 0) & (blended < 1) & (matched > 0) & (matched < 1)
    torch.testing.assert_close(blended[unclamped], torch.lerp(source, matched, 0.4)[unclamped], atol=1e-5, rtol=0)


def test_colour_match_moves_the_results_colour_covariance_to_the_paintings_and_keeps_its_mean(ckpt, tmp_path):
    torch.manual_seed(0)
    content = 0.3 + 0.4 * torch.rand(1, 3, 64, 48)
    style = (0.5 + 0.25 * torch.randn(1, 3, 40, 40) * torch.tensor([1.0, 0.3, 0.6])[:, None, None]).clamp(0, 1)
    shifted = load_stylizer(ckpt, "cpu", colour_shift=1.0)
    matched = load_stylizer(ckpt, "cpu", colour_shift=1.0, colour_match=1.0)
    assert shifted.colour_match == 0  # off unless a card or the caller asks for it
    before, after = shifted.stylize_large(content, style, tile=None), matched.stylize_large(content, style, tile=None)
    cov = lambda image: colour_statistics(image)[1]  # noqa: E731
    assert (cov(after) - cov(style)).norm() < 0.2 * (cov(before) - cov(style)).norm()
    torch.testing.assert_close(mean_colour(after), mean_colour(before), atol=0.02, rtol=0)  # colour_shift's mean stays
    half = load_stylizer(ckpt, "cpu", colour_shift=1.0, colour_match=0.5).stylize_large(content, style, tile=None)
    assert (cov(after) - cov(style)).norm() < (cov(half) - cov(style)).norm() < (cov(before) - cov(style)).norm()
    with pytest.raises(StylizeError, match="colour_match is a strength between 0 and 1"):
        load_stylizer(ckpt, "cpu", colour_match=2)
    # the card sets the default (infer.py colour_match= overrides it)
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    checkpoint["nststyle"]["colour_match"] = 0.6
    torch.save(checkpoint, tmp_path / "card.ckpt")
    assert load_stylizer(tmp_path / "card.ckpt", "cpu").colour_match == 0.6
    assert load_stylizer(tmp_path / "card.ckpt", "cpu", colour_match=0).colour_match == 0


def test_mix_shifts_to_the_weighted_mean_colour_of_its_paintings(ckpt, images, tmp_path):
    run("mode=mix", f"ckpt={ckpt}", f"content={images['astronaut']}", f"style=[{images['chelsea']},{images['rocket']}]",
        "weights=[1,0]", "colour_shift=1", f"output={tmp_path / 'mix.png'}")
    run("mode=stylize", f"ckpt={ckpt}", f"content={images['astronaut']}", f"style={images['chelsea']}",
        "colour_shift=1", f"output={tmp_path / 'one.png'}")
    assert (saved(tmp_path / "mix.png") - saved(tmp_path / "one.png")).abs().max() <= 1 / 255


@pytest.mark.slow  # L-BFGS through the VGG on the CPU: minutes
def test_refining_a_paintings_code_lowers_the_evaluations_style_distance_and_is_done_once(
        ckpt, inverse_checkpoint, images, tmp_path, monkeypatch):
    torch.manual_seed(0)
    painting = load_image(images["rocket"])[None]
    stylizer = load_stylizer(ckpt, "cpu", refine_steps=12, colour_shift=1.0)
    metrics = StyleMetrics(vgg_weights="random")  # the tiny checkpoint's VGG: what the refinement scores with
    with torch.no_grad():
        w0 = stylizer.net.decoder.mapping(stylizer.style_code(painting))
    refined = refine_style_code(stylizer.net, metrics, painting, w0, steps=12, progress=False)

    def style_distance(w):  # the metrics module's own figure, averaged over the photos the refinement stylises
        photos = refine_photos(64, stylizer.multiple)
        return sum(metrics(shift_mean_colour(stylizer.synthesize(photo, w), mean_colour(painting)), photo,
                           painting)["style"] for photo in photos) / len(photos)

    assert style_distance(refined) < 0.9 * style_distance(w0)
    assert all(p.requires_grad for p in stylizer.net.decoder.parameters())  # the network is handed back as it was
    assert all(p.grad is None for p in stylizer.net.parameters())

    def structure(w):  # the evaluation's structure figure of the same photos
        photos = refine_photos(64, stylizer.multiple)
        return sum(float(structure_distance(stylizer.synthesize(photo, w), photo)) for photo in photos) / len(photos)

    # the structure term of the objective: weighted strongly, the refined code keeps the photos' outlines better
    kept = refine_style_code(stylizer.net, metrics, painting, w0, steps=12, progress=False, structure_weight=5.0)
    free = refine_style_code(stylizer.net, metrics, painting, w0, steps=12, progress=False, structure_weight=0.0)
    assert structure(kept) < structure(free)

    # scored after the colour match inference applies (colour_match): the code it finds is better for that score
    def matched_style_distance(w):
        photos, covariance = refine_photos(64, stylizer.multiple), colour_statistics(painting)[1]
        recoloured = [shift_mean_colour(stylizer.synthesize(photo, w), mean_colour(painting)) for photo in photos]
        return sum(metrics(match_colour_statistics(image, colour_statistics(image)[0], covariance), photo,
                           painting)["style"] for image, photo in zip(recoloured, photos)) / len(photos)

    matched = refine_style_code(stylizer.net, metrics, painting, w0, steps=12, progress=False, colour_match=1.0)
    assert torch.isfinite(matched).all() and matched_style_distance(matched) < matched_style_distance(w0)

    calls = []
    original = nststyle.stylizers.variational.refine_style_code
    monkeypatch.setattr(nststyle.stylizers.variational, "refine_style_code", lambda *a, **k: calls.append(1) or original(*a, **k))
    content = torch.rand(1, 3, 32, 40)
    first = stylizer.stylize(content, painting)
    assert torch.equal(stylizer.stylize(content, painting), first) and len(calls) == 1  # once per painting
    stylizer.stylize(content, painting.flip(-1))
    assert len(calls) == 2
    plain = load_stylizer(ckpt, "cpu", colour_shift=1.0).stylize(content, painting)
    assert (first - plain).abs().mean() > 1e-3  # the refined code paints differently

    # infer.py: refine_steps reaches the variational model; the inverse network refuses it in one line
    run(f"ckpt={ckpt}", f"content={images['astronaut']}", f"style={images['rocket']}", "refine_steps=2",
        f"output={tmp_path / 'refined.png'}")
    assert (tmp_path / "refined.png").is_file()
    with pytest.raises(StylizeError, match="must be >= 0"):
        load_stylizer(ckpt, "cpu", refine_steps=-1)
    # mix: the refined codes, mixed; one painting at full weight is that painting's refined result
    before = len(calls)
    mixed = stylizer.mix(content, [painting, painting.flip(-1)], [1.0, 0.0])
    torch.testing.assert_close(mixed, stylizer.stylize(content, painting))
    assert len(calls) == before  # both codes were kept from above
    with pytest.raises(StylizeError, match="refine_steps applies to mode=stylize and mode=mix"):
        stylizer.interpolate(content, painting, painting.flip(-1), 3)
    with pytest.raises(StylizeError, match="refine_steps do\\(es\\) not apply to a 'inverse' checkpoint"):
        run(f"ckpt={inverse_checkpoint}", "content=x.jpg", "style=y.jpg", "refine_steps=5")
    fresh = load_stylizer(ckpt, "cpu", refine_steps=2, colour_shift=1.0)
    with torch.inference_mode():  # as the evaluation calls it
        refined_there = fresh.stylize(content, painting)
    assert torch.isfinite(refined_there).all() and (refined_there - plain).abs().mean() > 1e-3
