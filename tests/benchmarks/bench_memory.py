"""Benchmark: resident memory over a long CPU training run (issue: long runs stay healthy).

Trains the tiny variational model on the embedded sample set for ``--steps`` steps (32 px, random VGG
weights, fp32, the loader in-process and with workers) and prints the process's RSS at the start of
training and every ``--every`` steps, then the growth from the first report to the last. A flat line
means nothing accumulates per step (logged tensors holding graphs, growing caches, loader leaks).

    python tests/benchmarks/bench_memory.py [--steps 2000] [--every 250] [--workers 2]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import lightning.pytorch as pl
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from train import train  # noqa: E402

from nststyle.sample_set import build_sample_set  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


class RSSReport(pl.Callback):
    readings: list[tuple[int, float]] = []  # class-level: Hydra builds the instance

    def __init__(self, every: int):
        self.every = every

    def on_train_batch_end(self, trainer, *args):
        step = trainer.global_step
        if step == 1 or step % self.every == 0:
            self.readings.append((step, rss_mb()))
            print(f"step {step:5d}: RSS {self.readings[-1][1]:7.1f} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample"
        build_sample_set(sample)
        overrides = ["model=variational_tiny", "model.vgg_weights=random", "data.image_size=32",
                     "data.batch_size=2", f"data.num_workers={args.workers}", "data.val_pairs=2", "threads=1",
                     "logger=csv", "trainer.precision=32-true", f"trainer.max_steps={args.steps}",
                     "data.train_batches_per_epoch=100", "trainer.log_every_n_steps=10",
                     "callbacks.model_checkpoint.every_n_train_steps=500", "callbacks.progress_bar.refresh_rate=0",
                     f"data.sample_dir={sample}", f"paths.output_dir={tmp}/run",
                     f"+callbacks.rss._target_={__name__}.RSSReport", f"+callbacks.rss.every={args.every}"]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        train(cfg)
    (first_step, first), (last_step, last) = RSSReport.readings[0], RSSReport.readings[-1]
    print(f"RSS from step {first_step} to {last_step}: {first:.1f} -> {last:.1f} MB ({last - first:+.1f} MB, "
          f"{(last - first) / max(last_step - first_step, 1) * 1000:+.2f} MB per 1000 steps)")


if __name__ == "__main__":
    main()
