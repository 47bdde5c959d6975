import pytest
import torch
import torch.nn.functional as F

import nststyle.swap as swap_module
import nststyle.swap_kernel as swap_kernel
from nststyle.swap import (SCREEN_CAPACITY, SCREEN_ERROR, approximate_best_style_patches, best_style_patches,
                           can_screen, style_patch_norms, style_swap)


def reference_style_swap(content, style, patch_size=3, stride=1, eps=1e-8):
    """Chen & Schmidt as written in the paper, one style per content: conv with the normalised style
    patches -> argmax over channels -> one-hot -> transposed conv with the raw patches -> divide by the
    transposed conv of ones (the overlap count). Needs #content patches x #style patches memory."""
    k, s = patch_size, stride
    outputs = []
    for index, content_map in enumerate(content):
        style_map = style[index if style.shape[0] > 1 else 0]
        patches = F.unfold(style_map[None], k, stride=s)[0].t()  # P x (C*k*k)
        patches = patches.view(-1, style_map.shape[0], k, k)
        normalised = patches / patches.flatten(1).norm(dim=1).clamp_min(eps).view(-1, 1, 1, 1)
        scores = F.conv2d(content_map[None], normalised, stride=s)  # 1 x P x Hc' x Wc'
        one_hot = F.one_hot(scores.argmax(1), scores.shape[1]).permute(0, 3, 1, 2).to(content.dtype)
        # output_padding restores the rows/columns a stride skips at the far border
        padding = [(size - k) % s for size in content_map.shape[-2:]]
        rebuilt = F.conv_transpose2d(one_hot, patches, stride=s, output_padding=padding)
        overlap = F.conv_transpose2d(torch.ones_like(one_hot[:, :1]), torch.ones(1, 1, k, k, dtype=content.dtype),
                                     stride=s, output_padding=padding)
        outputs.append(rebuilt / overlap.clamp_min(1))
    return torch.cat(outputs)


def edge_padded_reference(content, style, patch_size, stride):
    """The paper's swap of the content map edge-padded until the strided patch grid reaches its far
    border, cropped back: what ``style_swap`` promises for ``stride <= patch_size``."""
    height, width = content.shape[-2:]
    pad = [(-(size - patch_size)) % stride if stride <= patch_size else 0 for size in (height, width)]
    padded = F.pad(content, (0, pad[1], 0, pad[0]), mode="replicate")
    return reference_style_swap(padded, style, patch_size, stride)[..., :height, :width]


def relu_features(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).relu()


@pytest.mark.parametrize("patch_size,stride", [(1, 1), (3, 1), (3, 2), (5, 1), (2, 3), (3, 4)])
def test_style_swap_matches_plain_reference_one_style(patch_size, stride):
    content = relu_features(3, 16, 13, 17, seed=1)
    style = relu_features(1, 16, 11, 9, seed=2)
    # chunk of 5 patches -> one style patch row per chunk: many chunks, running argmax exercised
    out = style_swap(content, style, patch_size, stride, chunk_size=5)
    assert out.shape == content.shape
    torch.testing.assert_close(out, edge_padded_reference(content, style, patch_size, stride))


@pytest.mark.parametrize("patch_size,stride", [(3, 1), (3, 2), (4, 3)])
def test_style_swap_matches_plain_reference_pairwise(patch_size, stride):
    content = relu_features(2, 8, 10, 12, seed=3)
    style = relu_features(2, 8, 14, 10, seed=4)
    out = style_swap(content, style, patch_size, stride, chunk_size=16)
    torch.testing.assert_close(out, edge_padded_reference(content, style, patch_size, stride))


@pytest.mark.parametrize("patch_size,stride,size", [(3, 2, 10), (5, 2, 12), (4, 3, 11), (5, 4, 14)])
def test_strided_swap_covers_every_pixel(patch_size, stride, size):
    # (size - patch_size) % stride != 0 in every case: the plain strided grid misses the far rows/columns
    assert (size - patch_size) % stride
    content = relu_features(1, 4, size, size, seed=10)
    style = torch.full((1, 4, 9, 9), 2.0, dtype=torch.float64)
    assert torch.all(style_swap(content, style, patch_size, stride) == 2.0)


def test_chunk_size_does_not_change_the_result():
    content, style = relu_features(2, 8, 12, 12, seed=5), relu_features(1, 8, 15, 11, seed=6)
    whole = best_style_patches(content, style, chunk_size=10**9)
    for chunk in (1, 9, 20):
        assert torch.equal(best_style_patches(content, style, chunk_size=chunk), whole)


@pytest.fixture
def pytorch_scoring(monkeypatch):
    """Run ``best_style_patches`` with the PyTorch scoring pass instead of the C kernel."""
    def run(*args, **kwargs):
        with monkeypatch.context() as patch:
            patch.setattr(swap_kernel, "_loaded", False)
            return best_style_patches(*args, **kwargs)
    return run


def test_the_c_kernel_builds_here():
    # CI has a C compiler: a kernel that silently fell back would leave the fast path untested
    assert swap_kernel.available()


@pytest.mark.parametrize("patch_size,stride,chunk_size", [(3, 1, None), (3, 1, 40), (3, 2, 7), (5, 1, 30),
                                                          (1, 1, None), (4, 3, 9), (2, 1, 12)])
def test_c_kernel_picks_the_same_patches_as_the_pytorch_pass(patch_size, stride, chunk_size, pytorch_scoring):
    content = relu_features(2, 24, 21, 19, seed=5).float()
    style = relu_features(1, 24, 23, 17, seed=6).float()
    for style_maps in (style, relu_features(2, 24, 18, 20, seed=7).float()):
        kernel = best_style_patches(content, style_maps, patch_size, stride, chunk_size=chunk_size, screen=False)
        assert torch.equal(kernel, pytorch_scoring(content, style_maps, patch_size, stride, chunk_size=chunk_size))
    # ties (a style with repeated patches) keep the lower index on both paths
    tiled = style[..., :6, :].repeat(1, 1, 3, 2)
    assert torch.equal(best_style_patches(content, tiled, patch_size, stride, screen=False),
                       pytorch_scoring(content, tiled, patch_size, stride))


# -- screening in bfloat16 (the exact search's fast path) -----------------------------------------------------

needs_screening = pytest.mark.skipif(not can_screen(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 3, 3)),
                                     reason="no bfloat16 matrix units or no C kernel on this machine")


@needs_screening
def test_screening_bound_holds_for_bfloat16_pixel_products():
    # the premise of SCREEN_RATIO: bfloat16 products of non-negative pixels, summed over a patch, stay within
    # 3 * 2^-8 of the exact score, even over six orders of magnitude of activations
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(500, 256, generator=generator) ** 6 * 100
    style = torch.rand(256, 700, generator=generator) ** 6 * 100
    exact = content.double() @ style.double()
    approximate = (content.bfloat16() @ style.bfloat16()).double()
    assert ((approximate - exact).abs() / exact).max() <= 3 * 2 ** -8 < SCREEN_ERROR


@needs_screening
@pytest.mark.parametrize("patch_size,stride,chunk_size", [(3, 1, None), (3, 1, 40), (3, 2, 7), (5, 1, 30),
                                                          (1, 1, None), (4, 3, 9), (2, 1, 12)])
def test_screened_search_picks_the_exact_searchs_patches(patch_size, stride, chunk_size):
    content = structured_features(64, 21, 19, seed=11).float()
    for style in (structured_features(64, 23, 17, seed=12).float(),
                  torch.cat([structured_features(64, 18, 20, seed=s).float() for s in (13, 14)])):
        batch_content = content.expand(style.shape[0], -1, -1, -1).contiguous() if style.shape[0] > 1 else content
        screened = best_style_patches(batch_content, style, patch_size, stride, chunk_size=chunk_size, screen=True)
        assert torch.equal(screened, best_style_patches(batch_content, style, patch_size, stride,
                                                        chunk_size=chunk_size, screen=False))
    # ties (a style with repeated patches) keep the lower index
    tiled = style[:1, :, :6, :].repeat(1, 1, 3, 2)
    assert torch.equal(best_style_patches(content, tiled, patch_size, stride, screen=True),
                       best_style_patches(content, tiled, patch_size, stride, screen=False))


@needs_screening
@pytest.mark.parametrize("max_overflow", [1.0, 0.0], ids=["per-position", "whole-map"])
def test_screened_search_handles_more_near_ties_than_it_keeps_and_empty_patches(max_overflow, monkeypatch):
    # a nearly flat style: every patch scores within 0.1 % of the best, more than SCREEN_CAPACITY candidates:
    # those positions are searched exactly, each on its own or (past SCREEN_MAX_OVERFLOW of them) all by the
    # float32 search; content patches that are all zero score 0 everywhere (the first patch)
    monkeypatch.setattr(swap_module, "SCREEN_MAX_OVERFLOW", max_overflow)
    generator = torch.Generator().manual_seed(3)
    style = 1 + 1e-3 * torch.rand(1, 16, 14, 14, generator=generator)
    content = torch.rand(1, 16, 12, 12, generator=generator)
    content[..., :5, :5] = 0
    assert 12 * 12 > SCREEN_CAPACITY
    screened = best_style_patches(content, style, screen=True)
    assert torch.equal(screened, best_style_patches(content, style, screen=False))
    assert torch.all(screened[0, :3, :3] == 0)


def test_screening_applies_to_non_negative_float32_maps_only():
    content, style = torch.rand(1, 8, 9, 9), torch.rand(1, 8, 9, 9)
    assert not can_screen(content - 0.5, style) and not can_screen(content.double(), style.double())
    with pytest.raises(ValueError, match="screen=True needs"):
        best_style_patches(content - 0.5, style, screen=True)
    # negative values: the default search stays exact on the float32 path
    assert torch.equal(best_style_patches(content - 0.5, style), best_style_patches(content - 0.5, style, screen=False))


def test_c_kernel_falls_back_with_a_warning_when_it_cannot_be_built(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(swap_kernel, "_loaded", None)
    monkeypatch.setenv("NSTSTYLE_CACHE", str(blocker / "cache"))  # under a file: the cache cannot be made
    with pytest.warns(RuntimeWarning, match="PyTorch path"):
        assert not swap_kernel.available()
    content, style = relu_features(1, 8, 9, 9, seed=8).float(), relu_features(1, 8, 7, 8, seed=9).float()
    torch.testing.assert_close(style_swap(content, style), edge_padded_reference(content, style, 3, 1))


def test_c_kernel_is_skipped_when_disabled(monkeypatch):
    monkeypatch.setattr(swap_kernel, "_loaded", None)
    monkeypatch.setenv("NSTSTYLE_SWAP_KERNEL", "0")
    assert not swap_kernel.available()
    content, style = relu_features(1, 8, 9, 9, seed=8).float(), relu_features(1, 8, 7, 8, seed=9).float()
    torch.testing.assert_close(style_swap(content, style), edge_padded_reference(content, style, 3, 1))


def test_swapping_a_map_with_itself_returns_it():
    # every patch's best normalised match (Cauchy-Schwarz) is itself, so the rebuild is the identity
    features = relu_features(1, 8, 9, 9, seed=7) + 0.1
    torch.testing.assert_close(style_swap(features, features), features)


def test_output_is_built_only_from_style_values_and_uncovered_pixels_are_zero():
    content = relu_features(1, 4, 7, 7, seed=8)
    style = torch.full((1, 4, 5, 5), 2.0, dtype=torch.float64)
    out = style_swap(content, style, patch_size=2, stride=3)  # gaps: rows/cols 2 and 5 are never covered
    covered = torch.zeros(7, dtype=torch.bool)
    covered[[0, 1, 3, 4]] = True
    mask = covered[:, None] & covered[None, :]
    assert torch.all(out[..., mask] == 2.0) and torch.all(out[..., ~mask] == 0)


def test_style_swap_is_float32_and_differentiable_wrt_style():
    content = relu_features(1, 8, 8, 8).float()
    style = relu_features(1, 8, 8, 8, seed=9).float().requires_grad_()
    style_swap(content, style).sum().backward()
    assert style.grad is not None and torch.isfinite(style.grad).all()


def test_style_swap_rejects_bad_shapes():
    with pytest.raises(ValueError, match="channel"):
        style_swap(torch.rand(1, 4, 8, 8), torch.rand(1, 5, 8, 8))
    with pytest.raises(ValueError, match="batch"):
        style_swap(torch.rand(3, 4, 8, 8), torch.rand(2, 4, 8, 8))
    with pytest.raises(ValueError, match="smaller"):
        style_swap(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 2, 8))


# -- approximate mode ------------------------------------------------------------------------------------

def structured_features(channels, height, width, seed, latent=16):
    """ReLU features with the structure of real ones: channels mix a few smooth latent maps (shared mixing
    matrix, so the content and style live in the same subspace), unlike independent noise."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, latent, height + 2, width + 2, generator=generator, dtype=torch.float64)
    latent_maps = F.avg_pool2d(noise, 3, 1)
    mixing = torch.randn(channels, latent, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (torch.einsum("cl,blhw->bchw", mixing, latent_maps) + 0.2).relu()


@pytest.mark.parametrize("patch_size,stride", [(3, 1), (3, 2), (2, 3), (1, 1)])
def test_approximate_search_is_exact_when_every_style_patch_is_a_candidate(patch_size, stride):
    content, style = relu_features(2, 16, 11, 13, seed=20), relu_features(1, 16, 5, 6, seed=21)
    n_patches = ((5 - patch_size) // stride + 1) * ((6 - patch_size) // stride + 1)
    approximate = approximate_best_style_patches(content, style, patch_size, stride, candidates=n_patches)
    assert torch.equal(approximate, best_style_patches(content, style, patch_size, stride))


@pytest.mark.parametrize("patch_size,stride,channels", [(3, 1, 64), (3, 2, 40), (2, 3, 21), (1, 1, 7)])
def test_c_kernel_scores_candidates_as_the_plain_patch_products(patch_size, stride, channels, monkeypatch):
    """The second stage's exact scores in C: <c, s> / ||s|| of whole patches, as unfolded patches give them (and
    as the PyTorch path's gathered rows do), for any channel count (vector lanes and the remainder)."""
    if not swap_kernel.available():
        pytest.skip("no C compiler here")
    generator = torch.Generator().manual_seed(patch_size * 10 + stride)
    content, style = torch.rand(1, channels, 17, 21, generator=generator), torch.rand(1, channels, 15, 13,
                                                                                       generator=generator)
    norms = swap_module.style_patch_norms(style, patch_size, stride).flatten()
    content_patches = F.unfold(content, patch_size, stride=stride)[0].t()  # Nc x C*k*k
    candidates = torch.randint(0, norms.numel(), (content_patches.shape[0], 5), generator=generator)
    expected = torch.einsum("nd,nkd->nk", content_patches.double(),
                            F.unfold(style, patch_size, stride=stride)[0].t().double()[candidates]) / norms.double()[candidates]
    scores = swap_module._candidate_scores(content, style, norms, candidates, patch_size, stride)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=0)
    monkeypatch.setattr(swap_kernel, "_loaded", False)  # the PyTorch path
    torch.testing.assert_close(swap_module._candidate_scores(content, style, norms, candidates, patch_size, stride),
                               scores, rtol=1e-5, atol=0)


@pytest.mark.parametrize("patch_size,stride", [(3, 1), (3, 2)])
def test_approximate_style_swap_with_a_small_style_is_the_paper_swap(patch_size, stride):
    # 2 x 4 (stride 1) or 1 x 2 (stride 2) style patches: no more than the 8 default candidates
    content, style = relu_features(2, 8, 10, 13, seed=22), relu_features(1, 8, 4, 6, seed=23)
    out = style_swap(content, style, patch_size, stride, mode="approximate")
    torch.testing.assert_close(out, edge_padded_reference(content, style, patch_size, stride))


def test_approximate_search_takes_the_exact_best_whenever_it_is_a_candidate(monkeypatch):
    # the second stage alone: a first stage that proposes the exact argmax among random decoys
    content, style = relu_features(2, 16, 12, 12, seed=24), relu_features(2, 16, 14, 10, seed=25)
    exact = best_style_patches(content, style)
    n_style = 12 * 8

    def proposals(content_map, style_map, norms, patch_size, stride, count, *args):
        item = 0 if torch.equal(content_map, content[:1]) else 1
        decoys = torch.randint(n_style, (exact[item].numel(), count), generator=torch.Generator().manual_seed(item))
        decoys[:, item % count] = exact[item].flatten()
        return decoys
    monkeypatch.setattr(swap_module, "_first_stage_candidates", proposals)
    assert torch.equal(approximate_best_style_patches(content, style, candidates=5), exact)


@pytest.mark.parametrize("ranker", ["c", "pytorch"])
@pytest.mark.parametrize("stride", [1, 2])
def test_approximate_search_agrees_with_exact_on_structured_features(stride, ranker, monkeypatch):
    if ranker == "pytorch":  # the group-maxima first stage (GPUs, CPUs without AVX512-BF16)
        monkeypatch.setattr(swap_kernel, "can_rank", lambda: False)
    # 64 channels: both reductions run (64 -> 48 channels, 432 -> 96 patch dimensions); 576 style patches
    # for 12 candidates: the first stage really prunes
    content, style = structured_features(64, 24, 28, seed=1), structured_features(64, 26, 26, seed=2)
    agreement = (approximate_best_style_patches(content, style, stride=stride)
                 == best_style_patches(content, style, stride=stride)).float().mean()
    assert agreement >= 0.95
    if stride == 1:  # the same search on unstructured noise agrees far less: the agreement is the subspace's doing
        noise_content, noise_style = relu_features(1, 64, 24, 28, seed=26), relu_features(1, 64, 26, 26, seed=27)
        noise_agreement = (approximate_best_style_patches(noise_content, noise_style)
                           == best_style_patches(noise_content, noise_style)).float().mean()
        assert noise_agreement < 0.9


def test_approximate_search_handles_batches_and_pairwise_styles_like_single_pairs():
    scales = torch.tensor([1.0, 0.5], dtype=torch.float64).view(2, 1, 1, 1)
    content = structured_features(64, 12, 14, seed=3) * scales + relu_features(2, 64, 12, 14, seed=28) * 0.1
    shared = structured_features(64, 11, 13, seed=4)  # 99 style patches for 12 candidates
    pairwise = torch.cat([shared, structured_features(64, 11, 13, seed=5)])
    for style in (shared, pairwise):
        batched = approximate_best_style_patches(content, style)
        for item in range(2):
            style_map = style[item: item + 1] if style.shape[0] > 1 else style
            single = approximate_best_style_patches(content[item: item + 1], style_map)
            assert torch.equal(batched[item: item + 1], single)
    assert not torch.equal(batched[1], approximate_best_style_patches(content[1:], shared)[0])  # pairs really differ
    assert torch.equal(approximate_best_style_patches(content, pairwise), batched)  # deterministic


def test_c_kernel_ranks_candidates_as_a_plain_top_k():
    """The fused first stage: for each query row, the set of ``count`` key rows with the highest float32 sums of
    bfloat16 products, as a dense product and ``topk`` give it (odd dimensions, a style count off the tile)."""
    if not swap_kernel.can_rank():
        pytest.skip("no C compiler or no AVX512-BF16 here")
    generator = torch.Generator().manual_seed(3)
    queries, keys = torch.randn(203, 37, generator=generator), torch.randn(1000, 37, generator=generator)
    queries, keys = queries.bfloat16(), keys.bfloat16()
    ranked = swap_kernel.rank_candidates(queries, keys, 12)
    expected = (queries.double() @ keys.double().t()).topk(12, dim=1).indices
    assert torch.equal(ranked.sort(1).values, expected.sort(1).values)


def test_bfloat16_operands_keep_the_leading_directions_exact():
    """The first stage's bfloat16 operands carry the rounding remainders of the leading directions (the last
    rows: eigh's ascending order), so where the patches live in those directions their products are the float32
    products to ~2^-16, where plain bfloat16 operands are off by ~2^-8; the baseline column only shifts each
    query's scores by one constant."""
    generator = torch.Generator().manual_seed(4)
    dims, n = 12, 300
    queries, keys = torch.zeros(dims, 50), torch.zeros(dims, n)
    queries[-swap_module.APPROXIMATE_SPLIT:] = torch.rand(swap_module.APPROXIMATE_SPLIT, 50, generator=generator) + 1
    keys[-swap_module.APPROXIMATE_SPLIT:] = torch.rand(swap_module.APPROXIMATE_SPLIT, n, generator=generator) + 1
    exact = queries.double().t() @ keys.double()
    relative = lambda scores: ((scores - exact).abs() / exact).max().item()
    plain = queries.bfloat16().double().t() @ keys.bfloat16().double()
    split_queries, split_keys = swap_module._bfloat16_operands(queries, keys, generator, baseline=False)
    split = split_queries.double().t() @ split_keys.double()
    assert relative(split) < 2 ** -14 and relative(plain) > 2 ** -10
    with_queries, with_keys = swap_module._bfloat16_operands(queries, keys, generator, baseline=True)
    shifted = with_queries.double().t() @ with_keys.double()
    offset = shifted - split  # one constant per query: minus its baseline (the best score of a style sample)
    torch.testing.assert_close(offset, offset[:, :1].expand_as(offset), rtol=0, atol=1e-12)
    assert (offset[:, 0] < 0).all() and (shifted.amax(1) >= 0).all()


def test_propagation_recovers_shifted_matches_and_never_lowers_a_score():
    # content = a crop of the style: each content patch's exact best is the style patch it was cut from
    style = relu_features(1, 16, 14, 15, seed=28)
    content = style[..., 3:11, 2:12]
    norms = style_patch_norms(style, 3, 1).flatten()
    truth = best_style_patches(content, style)[0]
    rows, columns = truth.shape
    wrong = truth.clone()
    wrong[2:5, 3:6] = torch.randint(norms.numel(), (3, 3), generator=torch.Generator().manual_seed(5))
    wrong[3, 4] = truth[0, 0]  # the centre: no neighbour knows its best after one round, two rounds reach it
    once = swap_module._propagated(content, style, norms, wrong, 3, 1, rounds=1)
    outer = torch.ones(3, 3, dtype=torch.bool)
    outer[1, 1] = False
    assert torch.equal(once[2:5, 3:6][outer], truth[2:5, 3:6][outer])
    assert torch.equal(swap_module._propagated(content, style, norms, wrong, 3, 1, rounds=2), truth)
    scores = lambda best: swap_module._candidate_scores(content, style, norms, best.reshape(-1, 1), 3, 1)
    random_start = torch.randint(norms.numel(), (rows, columns), generator=torch.Generator().manual_seed(6))
    assert (scores(swap_module._propagated(content, style, norms, random_start, 3, 1, rounds=1))
            >= scores(random_start)).all()


def test_approximate_style_swap_is_differentiable_wrt_style_and_covers_strided_borders():
    content = structured_features(64, 13, 14, seed=6).float()
    style = structured_features(64, 12, 12, seed=7).float().requires_grad_()
    # (13 - 3) % 2 == 0 but (14 - 3) % 2 == 1: the last column needs the edge padding
    out = style_swap(content, style, patch_size=3, stride=2, mode="approximate")
    assert out.shape == content.shape and (out[..., -1].abs().sum() > 0)
    out.sum().backward()
    assert style.grad is not None and torch.isfinite(style.grad).all()
    with torch.no_grad():  # the rebuild's buffered path (no autograd) gives the same values
        assert torch.equal(style_swap(content, style, patch_size=3, stride=2, mode="approximate"), out)


def test_style_swap_rejects_unknown_modes_and_bad_approximate_settings():
    content, style = torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8)
    with pytest.raises(ValueError, match="unknown style swap mode 'fast': exact or approximate"):
        style_swap(content, style, mode="fast")
    with pytest.raises(ValueError, match="candidates, dims and channels must be >= 1"):
        approximate_best_style_patches(content, style, candidates=0)
