import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nststyle.models.layers import ReflectConv2d, ReflectionPad, reflect_pad, resize_kernel
from nststyle.models.variational import padded_conv


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


@pytest.mark.parametrize("padding", ["reflect", "zeros"])
def test_padded_conv_keeps_the_size_and_loads_the_other_paddings_weights(padding):
    conv = padded_conv(4, 5, 7, padding=padding)
    other = padded_conv(4, 5, 7, padding="zeros" if padding == "reflect" else "reflect")
    other.load_state_dict(conv.state_dict())
    x = torch.rand(2, 4, 13, 10)
    assert conv(x).shape == (2, 5, 13, 10)
    reference = nn.Conv2d(4, 5, 7, padding=3, padding_mode=padding)
    reference.load_state_dict(conv.state_dict())
    torch.testing.assert_close(conv(x), reference(x))
    with pytest.raises(ValueError, match="unknown padding"):
        padded_conv(4, 5, padding="circle")


def test_resize_kernel_keeps_a_flat_inputs_answer_and_grows_as_the_same_function():
    weight = torch.randn(3, 6, 7, 7, dtype=torch.float64)
    flat = torch.rand(1, 6, 1, 1, dtype=torch.float64).expand(1, 6, 9, 9)
    small = resize_kernel(weight, 3)
    assert small.shape == (3, 6, 3, 3)
    torch.testing.assert_close(F.conv2d(flat, small)[..., 0, 0], F.conv2d(flat, weight)[..., 0, 0])
    x = torch.randn(1, 6, 11, 11, dtype=torch.float64)
    torch.testing.assert_close(F.conv2d(x, resize_kernel(small, 7)), F.conv2d(x, small, padding=0)[..., 2:-2, 2:-2])
    with pytest.raises(ValueError, match="odd"):
        resize_kernel(weight, 4)
