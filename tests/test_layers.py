import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nststyle.models.layers import ReflectConv2d, ReflectionPad, reflect_pad


@pytest.mark.parametrize("pad", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_reflect_pad_is_f_pad_in_values_gradients_and_layout(pad, channels_last):
    x = torch.randn(2, 5, 9, 11, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = reflect_pad(ours, pad)
    expected = F.pad(reference, (pad,) * 4, mode="reflect")
    assert torch.equal(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    weights = torch.randn_like(expected)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(ours.grad, reference.grad)


def test_reflect_pad_keeps_bfloat16_under_autocast():
    # F.pad's reflect mode is on CPU autocast's float32 list (a cast up and down around every padded conv)
    x = torch.rand(1, 4, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.pad(x, (1,) * 4, mode="reflect").dtype == torch.float32
        assert reflect_pad(x, 1).dtype == torch.bfloat16
    assert torch.equal(reflect_pad(x, 1), F.pad(x, (1,) * 4, mode="reflect"))


def test_reflect_layers_match_torch_layers_and_share_their_parameters():
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 6, 7, stride=2, padding=3, padding_mode="reflect")
    conv = ReflectConv2d(3, 6, 7, stride=2, padding=3)
    conv.load_state_dict(reference.state_dict())  # the same parameter names and shapes
    x = torch.rand(1, 3, 20, 17)
    torch.testing.assert_close(conv(x), reference(x))
    assert torch.equal(ReflectionPad(2)(x), nn.ReflectionPad2d(2)(x))
    with pytest.raises(RuntimeError):  # what F.pad says of a pad as large as the image
        reflect_pad(torch.rand(1, 1, 3, 3), 3)


def test_traced_graphs_pad_with_f_pad():
    conv = ReflectConv2d(3, 4, 3, padding=1)
    traced = torch.jit.trace(conv, torch.rand(1, 3, 8, 8))
    assert "reflection_pad2d" in str(traced.graph) or "pad" in str(traced.graph)
    assert "copy_" not in str(traced.graph)
