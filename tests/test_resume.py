"""Kill -9 and resume: a run killed mid-way (or inside a checkpoint write) and resumed with
``ckpt_path=last`` ends with the very weights of an uninterrupted run with the same seed."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from nststyle.sample_set import build_sample_set

ROOT = Path(__file__).resolve().parents[1]

# tiny network, random VGG, fp32 on the CPU; two loader workers so that resuming must also put each
# worker back on its share of the batch stream; checkpoints every 3 steps, segments of 4 batches, so the
# resume at step 3 lands inside a segment
RUN = ["model=variational_tiny", "model.vgg_weights=random", "data.image_size=32", "data.batch_size=2",
       "data.num_workers=2", "data.val_pairs=2", "data.shuffle_buffer=4", "threads=1", "logger=csv",
       "trainer.precision=32-true", "trainer.max_steps=8", "data.train_batches_per_epoch=4",
       "trainer.log_every_n_steps=1", "callbacks.model_checkpoint.every_n_train_steps=3", "seed=5",
       "task_name=resume_test"]


class KillAtStep(pl.Callback):
    """SIGKILL this process at the end of step ``step``: no handler, no exception, no checkpoint on exit."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillInsideSave(pl.Callback):
    """SIGKILL this process half-way through writing ``last.ckpt`` at step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.global_step != self.step:
            return
        from fsspec.implementations.local import LocalFileOpener

        write = LocalFileOpener.write

        def write_half_then_die(opener, data):
            if str(opener.path).endswith("last.ckpt"):
                write(opener, data[: len(data) // 2])
                opener.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return write(opener, data)

        LocalFileOpener.write = write_half_then_die


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample")
    build_sample_set(path)
    return path


def train(log_dir: Path, sample_dir: Path, run: str, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *RUN, f"data.sample_dir={sample_dir}",
                           f"paths.log_dir={log_dir}", f"hydra.run.dir={log_dir}/resume_test/runs/{run}", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def final_state(log_dir: Path, run: str) -> dict:
    checkpoint = torch.load(log_dir / "resume_test" / "runs" / run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 8
    return checkpoint


def losses(log_dir: Path, run: str) -> dict[int, str]:
    """The train/loss column of the run's latest CSV log (a run resumed in its own folder adds a version)."""
    latest = max((log_dir / "resume_test" / "runs" / run / "csv").glob("version_*"), key=lambda p: int(p.name[8:]))
    rows = (latest / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    step, loss = header.index("step"), header.index("train/loss")
    return {int(row.split(",")[step]): row.split(",")[loss] for row in rows[1:] if row.split(",")[loss]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, sample_dir):
    log_dir = tmp_path_factory.mktemp("uninterrupted")
    result = train(log_dir, sample_dir, "a")
    assert result.returncode == 0, result.stderr[-3000:]
    return final_state(log_dir, "a"), losses(log_dir, "a")


def assert_same_run(resumed: dict, uninterrupted: dict):
    for key, value in uninterrupted["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-6, atol=1e-7, msg=key)
    assert resumed["lr_schedulers"] == uninterrupted["lr_schedulers"]


@pytest.mark.parametrize("killer", ["KillAtStep", pytest.param("KillInsideSave", marks=pytest.mark.slow)])
def test_killed_run_resumes_with_ckpt_path_last_to_the_uninterrupted_weights(killer, tmp_path, sample_dir,
                                                                              uninterrupted):
    # killed at step 5 (last.ckpt from step 3) and resumed as a new run of the task; or killed while
    # writing step 6's last.ckpt (step 3's must survive) and resumed in its own folder, as a requeued
    # cluster job is
    step, again = (5, "c") if killer == "KillAtStep" else (6, "b")
    killed = train(tmp_path, sample_dir, "b", f"+callbacks.kill._target_=test_resume.{killer}",
                   f"+callbacks.kill.step={step}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = tmp_path / "resume_test" / "runs" / "b" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3  # whole and loadable

    resumed = train(tmp_path, sample_dir, again, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {last}" in resumed.stderr
    state, curve = final_state(tmp_path, again), losses(tmp_path, again)
    assert_same_run(state, uninterrupted[0])
    # the steps after the resume saw the same batches and the same code noise
    assert sorted(curve) == [3, 4, 5, 6, 7] and all(curve[s] == uninterrupted[1][s] for s in curve), curve


def test_ckpt_path_last_without_an_earlier_run_starts_afresh(tmp_path, sample_dir):
    result = train(tmp_path, sample_dir, "a", "ckpt_path=last", "trainer.max_steps=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no earlier run of resume_test to resume" in result.stderr
