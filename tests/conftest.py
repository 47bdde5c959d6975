"""Fixtures shared by the test modules."""
from pathlib import Path

import pytest
import torch

from nststyle.models.inverse import InverseNet
from nststyle.models.variational import AdaIN, VariationalStyleNet

TINY_NET = dict(style_dim=6, width=8, max_width=16, downsamplings=2, bottleneck_blocks=1, mapping_layers=1,
                mapping_hidden=16)


@pytest.fixture(scope="module")  # cheap to build: each test module gets its own
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A variational checkpoint in train.py's format whose style code visibly matters (random AdaIN maps;
    a freshly trained net starts with zero maps, i.e. plain instance norm)."""
    torch.manual_seed(0)
    net = VariationalStyleNet(**TINY_NET)
    for module in net.modules():
        if isinstance(module, AdaIN):
            torch.nn.init.normal_(module.to_stats.weight, std=0.5)
    torch.nn.init.normal_(net.style_encoder.to_gaussian.weight, std=0.5)  # codes of order 1
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    torch.save({"state_dict": {f"net.{key}": value for key, value in net.state_dict().items()},
                "nststyle": {"kind": "variational", "net": TINY_NET, "vgg_weights": "random"},
                "config": {"model": {"style_dim": 6}}, "global_step": 0}, path)
    return path


@pytest.fixture(scope="module")  # cheap to build: each test module gets its own
def inverse_checkpoint(tmp_path_factory) -> Path:
    """A small inverse network (random VGG encoder, batch-norm decoder) in train.py's checkpoint format."""
    torch.manual_seed(0)
    net = InverseNet(widths=[8, 4], norm="batch")
    path = tmp_path_factory.mktemp("inverse") / "inverse.ckpt"
    torch.save({"state_dict": {f"net.{key}": value for key, value in net.state_dict().items()},
                "nststyle": {"kind": "inverse", "net": {"widths": [8, 4], "norm": "batch"}, "vgg_weights": "random",
                             "layer": "relu3_1"}}, path)
    return path
