"""Beyond single runs: an Optuna search that minimises the evaluation's score, and multirun jobs through
the submitit launcher (run here with submitit_local; the SLURM config composes)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from nststyle.sample_set import build_sample_set

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=variational_tiny", "model.vgg_weights=random", "data.image_size=32", "data.batch_size=2",
        "data.num_workers=0", "data.val_pairs=2", "data.shuffle_buffer=4", "threads=1", "logger=none",
        "trainer.max_steps=2", "data.train_batches_per_epoch=2"]


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample")
    build_sample_set(path)
    return path


def train(*args, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=timeout)


@pytest.mark.slow  # a sweep of training jobs
def test_optuna_search_minimises_the_evaluation_score(tmp_path, sample_dir):
    result = train("hparams_search=variational_optuna", *TINY, f"data.sample_dir={sample_dir}",
                   "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"loss", "model.style_weight", "model.style_dim", "model.optimizer.lr"}
    assert best["best_params"]["loss"] in {"w2", "bn", "gram", "mmd_poly"}
    # each trial returned its val/eval_score, the best is the least of them
    scores = [float(line.split("val/eval_score=")[1].split(",")[0]) for line in result.stdout.splitlines()
              if line.startswith("done: ")]
    assert len(scores) == 3 and best["best_value"] == pytest.approx(min(scores), rel=1e-3)


@pytest.mark.slow  # test_train.py's multirun covers the local launcher; this one the submitit plug-in
def test_submitit_local_runs_a_two_job_multirun(tmp_path, sample_dir):
    result = train("-m", "hydra/launcher=local", "loss=gram,w2", *TINY, f"data.sample_dir={sample_dir}",
                   f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    for job, loss in ((0, "gram"), (1, "w2")):
        checkpoint = torch.load(tmp_path / str(job) / "checkpoints" / "last.ckpt", weights_only=True)
        assert checkpoint["global_step"] == 2 and checkpoint["config"]["loss"]["kind"] == loss
    assert list((tmp_path / ".submitit").rglob("*_log.out"))  # submitit ran them as its own jobs


def test_the_slurm_launcher_config_composes_for_ddp_with_requeue():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=8"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 8  # one process per GPU, as Lightning's DDP under SLURM expects
    assert launcher.max_num_timeout > 0 and launcher.timeout_min >= 24 * 60
