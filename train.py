"""Train a style-transfer model: ``python train.py experiment=quickstart`` (see conf/train.yaml).

    python train.py experiment=quickstart                       # sample set, CPU, a few minutes
    python train.py -m loss=gram,w2 model.style_dim=8,64        # a multirun: one job per combination
    python train.py ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt   # resume that run
    python train.py experiment=quickstart ckpt_path=last     # resume the newest run of this task_name
    python train.py experiment=quickstart init_from=variational              # fine-tune the shipped weights

``train(cfg)`` returns the final metrics (``trainer.callback_metrics``) so sweepers can optimise them.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from nststyle.cli import check_overrides
from nststyle.data import NoImagesError
from nststyle.features import WeightsUnavailableError
from nststyle.images import ImageError
from nststyle.losses import style_loss
from nststyle.checkpoints import warm_start
from nststyle.errors import StylizeError
from nststyle.swap import bf16_is_fast


class ConfigError(ValueError):
    """A configuration that cannot train (message is one line)."""


def check_loss(cfg: DictConfig) -> None:
    """Fail before building anything when ``loss=`` is not a distribution loss (e.g. ``loss=swap``,
    which only exists for ``infer.py method=optimize``)."""
    loss = cfg.get("loss")
    if loss is None or "kind" not in loss:
        return
    try:
        style_loss(loss.kind)
    except ValueError as error:
        raise ConfigError(f"loss={loss.kind} cannot train a feed-forward model: {error}") from None


def check_devices(cfg: DictConfig) -> None:
    """Fail before building anything when ``trainer.devices`` asks for more GPUs (or, on the CPU, more
    processes than cores) than this machine has; Lightning would fail later, with a longer message."""
    trainer = cfg.get("trainer") or {}
    devices, accelerator = trainer.get("devices"), str(trainer.get("accelerator", "auto"))
    if not isinstance(devices, int) or devices < 1:  # "auto", -1 or a list of ids: Lightning checks those
        return
    gpus = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus):
        available, what = gpus, "GPUs"
    elif accelerator in ("cpu", "auto"):
        available, what = os.cpu_count() or 1, "CPU cores"
    else:
        return
    if devices > available:
        raise ConfigError(f"trainer.devices={devices} but this machine has {available} {what} "
                          f"(trainer.accelerator={accelerator})")


def resume_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=last``: this job's own ``last.ckpt`` when it has one (a cluster job requeued after
    preemption runs again in its folder), else - for a single run - the newest ``last.ckpt`` of an
    earlier run of this ``task_name`` under ``paths.log_dir``, else None: a fresh start, so that the
    first attempt and its requeues share one command line. Jobs of a multirun only resume their own."""
    if cfg.get("ckpt_path") != "last":
        return cfg.get("ckpt_path")
    own = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    candidates = [own] if own.exists() else []
    if not candidates and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN:
        candidates = list(Path(cfg.paths.log_dir, cfg.task_name).glob("runs/*/checkpoints/last.ckpt"))
    if not candidates:
        print(f"ckpt_path=last: no earlier run of {cfg.task_name} to resume: starting afresh", file=sys.stderr)
        return None
    newest = max(candidates, key=lambda path: path.stat().st_mtime)
    print(f"resuming {newest}", file=sys.stderr)
    return str(newest)


def resolve_precision(cfg: DictConfig) -> None:
    """``trainer.precision=auto``: bf16-mixed where the device runs bfloat16 natively (GPUs with bf16, CPUs with
    AVX512-BF16 or AMX), else 32-true: an AVX2-only CPU emulates bfloat16 ~25x slower than float32 (a 192 px
    training step went from seconds to minutes). An explicit bf16 on such a CPU is kept, with a warning."""
    trainer = cfg.get("trainer") or {}
    precision, accelerator = str(trainer.get("precision", "32-true")), str(trainer.get("accelerator", "auto"))
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    native = bf16_is_fast(torch.device("cuda" if on_gpu else "cpu"))
    if precision == "auto":
        cfg.trainer.precision = "bf16-mixed" if native else "32-true"  # what the checkpoints' run config records
    elif precision.startswith("bf16") and not native:
        print(f"warning: trainer.precision={precision}, but this {'GPU' if on_gpu else 'CPU'} has no native bfloat16: "
              "expect float32's results many times slower (trainer.precision=auto picks 32-true here)", file=sys.stderr)


def instantiate_all(group: DictConfig | None) -> list:
    """Every ``_target_`` entry of a config group (callbacks, loggers) as an object."""
    return [hydra.utils.instantiate(node) for node in (group or {}).values()
            if isinstance(node, DictConfig) and "_target_" in node]


def train(cfg: DictConfig) -> dict[str, float]:
    check_loss(cfg)
    check_devices(cfg)
    resolve_precision(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    # the data stream follows the run's seed unless data.seed says otherwise (seed=null: fresh each run)
    data_seed = {"seed": cfg.get("seed")} if cfg.data.get("seed") is None else {}
    datamodule = hydra.utils.instantiate(cfg.data, **data_seed)
    if hasattr(datamodule, "check_sources"):
        datamodule.check_sources()
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    model = hydra.utils.instantiate(cfg.model)
    model.run_config = OmegaConf.to_container(cfg, resolve=True)  # goes into every checkpoint
    if cfg.get("init_from"):
        warm_start(model, cfg.init_from)

    loggers = instantiate_all(cfg.get("logger"))
    callbacks = instantiate_all(cfg.get("callbacks"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [callback for callback in callbacks if not isinstance(callback, LearningRateMonitor)]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(model.run_config)

    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_path(cfg))
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        import wandb
        wandb.finish()  # one run per job in a multirun
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except (ConfigError, ImageError, StylizeError, WeightsUnavailableError, FileNotFoundError,
            NoImagesError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    summary = ", ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items()) if "/" in name)
    print(f"done: {cfg.paths.output_dir} ({summary})")
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    check_overrides("train")
    main()
