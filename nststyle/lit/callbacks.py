"""Callbacks: image grids of the fixed validation pairs to the logger; the evaluation's figures of those
pairs; the final checkpoint; the random generators in checkpoints; stopping a run whose steps keep
coming out non-finite."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from ..images import save_grid
from ..metrics import StyleMetrics


class ImageGridLogger(pl.Callback):
    """After every validation run, stylise the first validation batch (the datamodule's fixed pairs)
    and log one grid, a row per pair: ``content | style | output | prior samples...``.

    Prior samples use codes drawn once from a seeded generator, so grids of successive steps show the
    same styles evolving. The module must provide ``stylize(content, style)`` and may provide
    ``sample_prior(content, z)`` with ``net.style_dim``; without the latter (e.g. the inverse network)
    the rows are ``content | style | output``.

    W&B gets a ``wandb.Image``; any other logger (or none) gets a JPEG in ``<log_dir>/images/``.
    """

    def __init__(self, max_pairs: int = 4, prior_samples: int | None = None, seed: int = 0, tile_size: int = 128):
        self.max_pairs, self.prior_samples, self.seed, self.tile_size = max_pairs, prior_samples, seed, tile_size
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and dataloader_idx == 0 and self.batch is None:
            content, style = batch
            self.batch = (content[: self.max_pairs].detach(), style[: self.max_pairs].detach())

    def prior_codes(self, pl_module) -> torch.Tensor | None:
        count = self.prior_samples if self.prior_samples is not None else pl_module.hparams.get("prior_samples", 0)
        if not count or not hasattr(pl_module, "sample_prior"):
            return None
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randn(count, pl_module.net.style_dim, generator=generator)

    @torch.no_grad()
    def render(self, pl_module) -> tuple[list[torch.Tensor], int]:
        content, style = (t.to(pl_module.device) for t in self.batch)
        was_training = pl_module.training
        pl_module.eval()
        try:
            columns = [content, style, pl_module.stylize(content, style)]
            codes = self.prior_codes(pl_module)
            if codes is not None:
                columns += [pl_module.sample_prior(content, z[None].to(pl_module.device)) for z in codes]
        finally:
            pl_module.train(was_training)
        tiles = [column[row].float().cpu() for row in range(len(content)) for column in columns]
        return tiles, len(columns)

    def on_validation_epoch_end(self, trainer, pl_module):
        if self.batch is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        tiles, ncols = self.render(pl_module)
        step = trainer.global_step
        path = Path(self.image_dir(trainer)) / f"val_step{step:07d}.jpg"
        save_grid(tiles, path, nrow=ncols, size=self.tile_size)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                caption = "content | style | output" + (" | prior samples" if ncols > 3 else "")
                logger.log_image("val/grid", [str(path)], step=step, caption=[caption])

    @staticmethod
    def image_dir(trainer) -> str:
        # Not trainer.log_dir: it broadcasts from rank 0, and only rank 0 gets here (DDP hung on it).
        logger = trainer.logger
        root = (getattr(logger, "log_dir", None) or logger.save_dir) if logger else None
        return str(Path(root or trainer.default_root_dir) / "images")


class EvaluationFigures(pl.Callback):
    """After every validation, the evaluation's figures (``nststyle.metrics``: content, style, Gram, W2 and
    structure distances, as ``infer.py mode=evaluate`` computes them) of the datamodule's fixed validation pairs,
    logged as ``val/eval_*``, plus ``val/eval_score = style + penalty * (max(0, content - content_ceiling)
    + max(0, structure - structure_ceiling))``: one number to compare checkpoints, runs and loss kinds by
    (training losses of different kinds are not comparable), and what hyper-parameter sweeps minimise. The
    default ceilings are the Magenta model's content and structure distances on the held-back pairs: a run
    cannot buy style by repainting the photo."""

    def __init__(self, max_pairs: int = 8, content_ceiling: float = 1.14, penalty: float = 1.0,
                 structure_ceiling: float = 0.315):
        self.max_pairs, self.content_ceiling, self.penalty = max_pairs, content_ceiling, penalty
        self.structure_ceiling = structure_ceiling
        self.metrics: StyleMetrics | None = None

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer, pl_module):
        images = getattr(trainer.datamodule, "val_images", None)
        if trainer.sanity_checking or images is None:
            return
        if self.metrics is None:
            self.metrics = StyleMetrics(pl_module.hparams.vgg_weights, pl_module.device)
        content, style = (t[: self.max_pairs].to(pl_module.device) for t in images)
        outputs = pl_module.stylize(content, style).float()
        figures = [self.metrics(o[None], c[None], s[None]) for o, c, s in zip(outputs, content, style)]
        means = {name: sum(f[name] for f in figures) / len(figures) for name in figures[0]}
        excess = max(0.0, means["content"] - self.content_ceiling) + max(0.0, means["structure"] - self.structure_ceiling)
        means["score"] = means["style"] + self.penalty * excess
        pl_module.log_dict({f"val/eval_{name}": value for name, value in means.items()}, batch_size=len(figures))


class FinalCheckpoint(pl.Callback):
    """Write ``last.ckpt`` once more when training ends, if steps were taken since the last save.

    ``ModelCheckpoint`` writes ``last.ckpt`` only on its schedule (every N steps). A run that ``max_time``
    or ``max_steps`` stops between two periodic saves would otherwise lose its tail: a 62-minute CPU run
    ended at step 2240 with a ``last.ckpt`` from step 2200. Interruptions (Ctrl-C, SIGTERM) are covered by
    ``ModelCheckpoint(save_on_exception=True)`` in ``conf/callbacks/default.yaml``."""

    def __init__(self):
        self.saved_step = -1

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.saved_step = trainer.global_step

    def on_train_end(self, trainer, pl_module):
        callback = trainer.checkpoint_callback
        # Nothing saved yet: ModelCheckpoint.on_train_end writes last.ckpt itself, and a second writer
        # would make it keep both as last.ckpt and last-v1.ckpt.
        if (trainer.fast_dev_run or callback is None or not callback.save_last or callback.dirpath is None
                or self.saved_step < 0 or trainer.global_step == self.saved_step):
            return
        trainer.save_checkpoint(Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}")


class RNGState(pl.Callback):
    """Keep the global random generators (torch, CUDA, numpy, random) in every checkpoint and put them back
    before the first step of a resumed run, which then draws the same noise (the VAE's sampled codes) as
    an uninterrupted one. Lightning restores weights, optimiser, schedule and loop counters but not these.
    Under DDP the checkpoint holds rank 0's generators (ranks are seeded alike by ``seed_everything``)."""

    def __init__(self):
        self.pending: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # tensors and plain numbers only: Lightning reads checkpoints with torch.load(weights_only=True)
        kind, keys, position, has_gauss, cached = np.random.get_state()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self.pending = checkpoint.get("rng_states")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.pending is None:
            return
        states, self.pending = self.pending, None
        torch.set_rng_state(states["torch"])
        kind, keys, position, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        random.setstate(states["python"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])


class StopOnNonFinite(pl.Callback):
    """Stop training after ``patience`` non-finite steps in a row, with a message naming the step and the
    last checkpoint. A non-finite loss or gradient already skips its update (``lit.variational``), so one
    bad batch costs nothing; a streak means the run itself has gone wrong (a learning rate too high, a
    broken loss) and training on would only burn time. The module marks a skipped step by setting
    ``nonfinite_step``; a ``None`` step output counts too."""

    def __init__(self, patience: int = 20):
        self.patience, self.streak = patience, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        pl_module.nonfinite_step = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        bad = getattr(pl_module, "nonfinite_step", False) or loss is None or not torch.isfinite(loss).all()
        self.streak = self.streak + 1 if bad else 0
        if self.streak >= self.patience and not trainer.should_stop:
            trainer.should_stop = True
            last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
            print(f"stopping at step {trainer.global_step}: {self.streak} non-finite steps in a row (their updates "
                  f"were skipped, so the weights are those of step {trainer.global_step - self.streak}); "
                  f"last checkpoint: {last or 'none yet'}", file=sys.stderr)
