"""Benchmark: one training step of each shipped recipe's model through train.py's Lightning path against a
bare PyTorch loop doing the same forward/backward/Adam step with the same modules (issue target: <= 1.15x).

Both read the same in-memory batches (the loader is measured by bench_data.py), run the recipe's module
(``experiment=shared_images_cpu`` / ``inverse_shared_images_cpu``; batch 4) with autocast as the trainer's
``precision`` does, and no gradient clipping. Lightning's time per step is taken between consecutive
``on_train_batch_end`` calls, so it holds everything the trainer does per step (logging, callbacks, the
module's non-finite-gradient check); the bare loop is timed the same way. Medians over ``--steps`` steps
after 3 warm-up steps, ``--repeats`` alternating rounds; the ratio is Lightning / bare.

    python tests/benchmarks/bench_train_step.py [--sizes 128 256] [--precisions bf16 fp32] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import hydra
import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = {"variational": "shared_images_cpu", "inverse": "inverse_shared_images_cpu"}
WARMUP = 3


def build(model: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={EXPERIMENTS[model]}"])
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.model)


class StepTimes(pl.Callback):
    def __init__(self):
        self.stamps = []

    def on_train_batch_end(self, *args):
        self.stamps.append(time.perf_counter())


def lightning_steps(model: str, batches, precision: str) -> list[float]:
    module, timer = build(model), StepTimes()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=len(batches), precision=precision, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer], gradient_clip_val=None)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return [b - a for a, b in zip(timer.stamps[WARMUP:], timer.stamps[WARMUP + 1:])]


def bare_steps(model: str, batches, precision: str) -> list[float]:
    module = build(model)
    module.train()
    module.vgg.eval()  # frozen, as configure/train mode leaves it in the Lightning path
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad],
                                 lr=module.hparams.optimizer["lr"])
    stamps = []
    for content, style in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = module.losses(content, style)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps[WARMUP:], stamps[WARMUP + 1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(EXPERIMENTS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp32"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'model':12s} {'size':>5s} {'precision':>9s} {'Lightning':>10s} {'bare':>8s} {'ratio':>6s}  images/s (ours)")
    for model in args.models:
        for size in args.sizes:
            for name in args.precisions:
                precision = {"bf16": "bf16-mixed", "fp32": "32-true"}[name]
                generator = torch.Generator().manual_seed(0)
                batches = [(torch.rand(args.batch, 3, size, size, generator=generator),
                            torch.rand(args.batch, 3, size, size, generator=generator))
                           for _ in range(WARMUP + args.steps + 1)]
                ours, bare = [], []
                for _ in range(args.repeats):  # alternate the contenders
                    ours += lightning_steps(model, batches, precision)
                    bare += bare_steps(model, batches, precision)
                ours_s, bare_s = statistics.median(ours), statistics.median(bare)
                print(f"{model:12s} {size:5d} {name:>9s} {ours_s:9.3f}s {bare_s:7.3f}s {ours_s / bare_s:5.2f}x  "
                      f"{args.batch / ours_s:.1f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
