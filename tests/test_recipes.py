"""Each shipped model's recipe: its stages are experiment configs that compose, each network a warm start of the
one before, the last one's network and card those of the shipped file; the quick start fine-tunes that network."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from nststyle.checkpoints import KERNEL_WEIGHTS, differing_options, retire_options
from nststyle.lit.variational import inference_card, network_arguments
from nststyle.models.variational import VariationalStyleNet
from nststyle.pretrained import Pretrained

ROOT = Path(__file__).resolve().parents[1]
# what a warm start adapts between two variational networks (nststyle.checkpoints.warm_start)
ADAPTABLE = {"bottleneck_blocks", "padding", *KERNEL_WEIGHTS}


def compose_experiment(name: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", "init_from=previous.ckpt"])


def shipped_card(weights: Pretrained) -> dict:
    return retire_options(torch.load(weights.value.path, map_location="cpu", weights_only=True)["nststyle"])


def variational_network(model) -> dict:
    return network_arguments(model.net, model.get("style_dim"), model.vgg_weights)


@pytest.mark.parametrize("weights", list(Pretrained), ids=lambda w: w.name.lower())
def test_every_stage_composes_under_its_name(weights):
    assert weights.value.recipe.splitlines()[0] == f"python train.py experiment={weights.value.stages[0]}"
    for stage in weights.value.stages:
        cfg = compose_experiment(stage)
        assert cfg.task_name == stage and cfg.trainer.max_steps > 0
        assert cfg.model._target_.endswith("VariationalStyleTransfer" if weights.value.kind == "variational"
                                           else "InverseNetwork")


def test_the_variational_stages_end_in_the_shipped_network_and_card():
    stages = Pretrained.VARIATIONAL.value.stages
    models = [compose_experiment(stage).model for stage in stages]
    networks = [variational_network(model) for model in models]
    for before, after in zip(networks, networks[1:]):
        assert set(differing_options(VariationalStyleNet, before, after)[2]) <= ADAPTABLE
    card = shipped_card(Pretrained.VARIATIONAL)
    assert networks[-1] == card["net"]
    last = models[-1]
    assert inference_card(last.colour_shift, last.colour_match, last.card) == {
        key: card[key] for key in ("style_size", "colour_shift", "colour_match")}


def test_the_inverse_stages_end_in_the_shipped_network():
    model = compose_experiment(Pretrained.INVERSE.value.stages[-1]).model
    card = shipped_card(Pretrained.INVERSE)
    assert dict(model.net) == card["net"]
    assert (model.layer, model.patch_size, model.stride) == (card["layer"], card["patch_size"], card["stride"])


def test_the_quick_start_fine_tunes_the_shipped_network_with_its_card():
    model = compose_experiment("quickstart").model
    card = shipped_card(Pretrained.VARIATIONAL)
    assert variational_network(model) == card["net"]
    assert inference_card(model.colour_shift, model.colour_match, model.card) == {
        key: card[key] for key in ("style_size", "colour_shift", "colour_match")}
