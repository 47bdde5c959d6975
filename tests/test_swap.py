import pytest
import torch
import torch.nn.functional as F

from nststyle.swap import adain, adain_with_stats, best_style_patches, mean_std, style_swap


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


def test_adain_gives_content_the_style_statistics():
    content = relu_features(2, 6, 9, 11, seed=10) * 3 + 1
    style = relu_features(1, 6, 7, 5, seed=11) * 0.5
    out = adain(content, style)
    mean, std = mean_std(out)
    style_mean, style_std = mean_std(style)
    torch.testing.assert_close(mean, style_mean.expand_as(mean))
    torch.testing.assert_close(std, style_std.expand_as(std), rtol=1e-4, atol=1e-4)
    # the normalised content pattern survives: per-channel correlation with the content is 1
    centred = lambda t: (t - t.mean((-1, -2), keepdim=True)).flatten(2)
    correlation = F.cosine_similarity(centred(out), centred(content), dim=-1)
    torch.testing.assert_close(correlation, torch.ones_like(correlation))


def test_adain_pairwise_and_with_given_stats():
    content, style = relu_features(2, 4, 6, 6, seed=12), relu_features(2, 4, 5, 5, seed=13)
    pairwise = adain(content, style)
    for i in range(2):
        torch.testing.assert_close(pairwise[i:i + 1], adain(content[i:i + 1], style[i:i + 1]))
    torch.testing.assert_close(pairwise, adain_with_stats(content, *mean_std(style)))


def test_mean_std_matches_torch():
    features = relu_features(2, 3, 4, 5, seed=14)
    mean, std = mean_std(features, eps=0.0)
    assert mean.shape == std.shape == (2, 3, 1, 1)
    torch.testing.assert_close(mean.flatten(), features.mean((2, 3)).flatten())
    torch.testing.assert_close(std.flatten(), features.flatten(2).std(-1).flatten())
