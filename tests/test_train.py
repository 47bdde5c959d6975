"""train.py through Hydra: a fast_dev_run per loss kind, a short run that writes last.ckpt (with the
resolved config, without the VGG), the CLI's errors, and a two-job multirun."""
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train as train_script  # noqa: E402
from train import train  # noqa: E402

# every conf/loss entry that is a distribution loss (swap.yaml is for infer.py method=optimize only)
LOSS_KINDS = sorted(path.stem for path in (ROOT / "conf" / "loss").glob("*.yaml")
                    if "kind: swap" not in path.read_text())

# tiny network, 32 px, random VGG weights, no loader workers: seconds per run
FAST = ["model=variational_tiny", "model.vgg_weights=random", "data.image_size=32", "data.batch_size=2",
        "data.num_workers=0", "data.val_pairs=2", "data.shuffle_buffer=4", "threads=1"]


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    from nststyle.sample_set import build_sample_set

    path = tmp_path_factory.mktemp("sample")
    build_sample_set(path)
    return path


def wandb_records(path: Path):
    """The Records of a W&B transaction log (``run-*.wandb``): a 7-byte header, then LevelDB-log blocks of
    32 KiB whose chunks (4-byte CRC, 2-byte length, 1-byte type: 1 full, 2 first, 3 middle, 4 last) carry
    protobuf Records (wandb >= 0.19 has no Python reader of its own)."""
    from wandb.proto import wandb_internal_pb2

    raw, block, offset, pending = path.read_bytes(), 32768, 7, b""
    while offset + 7 <= len(raw):
        if block - offset % block < 7:  # a block's tail too short for a chunk header is padding
            offset += block - offset % block
            continue
        length, kind = struct.unpack("<HB", raw[offset + 4: offset + 7])
        pending += raw[offset + 7: offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record
        elif kind == 0:
            pending = b""


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def run_train(tmp_path, sample_dir, *overrides):
    cfg = compose_train([*FAST, f"data.sample_dir={sample_dir}", f"paths.output_dir={tmp_path}", *overrides])
    return cfg, train(cfg)

@pytest.mark.parametrize("loss", LOSS_KINDS)
def test_fast_dev_run_for_each_loss_kind(tmp_path, sample_dir, loss):
    _, metrics = run_train(tmp_path, sample_dir, f"loss={loss}", "logger=none", "+trainer.fast_dev_run=true")
    for name in ("train/loss", "train/content", "train/style", "train/kl", "val/loss"):
        assert name in metrics and torch.isfinite(torch.tensor(metrics[name])), (name, metrics)
    assert metrics["train/style"] > 0


def test_short_run_writes_last_ckpt_config_csv_and_offline_wandb(tmp_path, sample_dir):
    cfg, metrics = run_train(tmp_path, sample_dir, "logger=many", "trainer.max_steps=3",
                             "data.train_batches_per_epoch=3", "callbacks.model_checkpoint.every_n_train_steps=3",
                             "trainer.log_every_n_steps=1")
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert checkpoint["nststyle"]["kind"] == "variational"
    assert checkpoint["nststyle"]["net"]["style_dim"] == cfg.model.style_dim
    assert checkpoint["config"]["model"]["style_dim"] == cfg.model.style_dim
    assert checkpoint["config"]["loss"]["kind"] == "gram"
    assert not any(key.startswith("vgg.") for key in checkpoint["state_dict"])  # frozen VGG left out
    assert any(key.startswith("net.decoder.") for key in checkpoint["state_dict"])
    grids = list(tmp_path.glob("csv/version_0/images/val_step*.jpg"))
    assert grids, "the image-grid callback wrote nothing"
    header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "train/style", "val/loss", "lr-Adam"} <= set(header)
    assert "val/loss" in metrics
    # the evaluation's figures of the validation pairs, and the score that sweeps minimise
    figures = {name: metrics[f"val/eval_{name}"] for name in ("content", "style", "gram", "w2", "structure", "score")}
    assert all(value >= 0 and math.isfinite(value) for value in figures.values()), figures
    excess = max(0.0, figures["content"] - 1.14) + max(0.0, figures["structure"] - 0.315)
    assert figures["score"] == pytest.approx(figures["style"] + excess)
    # W&B ran offline (nothing leaves the machine) and got the same grid as an image
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/images/val/grid_*.jpg"))
    # what `wandb sync` would upload: the loss curves, the evaluation's figures, the grid and the run config
    records = list(wandb_records(next(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))))
    history = [{item.key or "/".join(item.nested_key) for item in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    assert sum("train/loss" in step for step in history) == 3
    assert {"val/eval_score", "val/loss", "val/grid/_type"} <= set().union(*history)
    config = {item.key for r in records if r.WhichOneof("record_type") == "config" for item in r.config.update}
    assert {"model", "loss", "data", "trainer", "seed"} <= config


def test_vgg_style_encoder_trains_and_its_checkpoint_stylizes(tmp_path, sample_dir):
    from nststyle.stylize import load_stylizer

    _, metrics = run_train(tmp_path, sample_dir, "model.net.style_encoder=vgg", "logger=none", "trainer.max_steps=2",
                           "data.train_batches_per_epoch=2")
    assert all(torch.isfinite(torch.tensor(metrics[name])) for name in ("train/loss", "val/loss", "val/style_gain"))
    stylizer = load_stylizer(tmp_path / "checkpoints" / "last.ckpt", "cpu")  # Es's VGG comes with the checkpoint
    content, style = torch.rand(1, 3, 32, 40), torch.rand(1, 3, 36, 36)
    output = stylizer.stylize(content, style)
    assert output.shape == content.shape and torch.isfinite(output).all()


def test_paintings_cropped_larger_than_the_photos_train_the_variational_model(tmp_path, sample_dir):
    _, metrics = run_train(tmp_path, sample_dir, "model.net.style_encoder=vgg", "data.style_image_size=48",
                           "logger=none", "trainer.max_steps=2", "data.train_batches_per_epoch=2")
    assert all(torch.isfinite(torch.tensor(metrics[name])) for name in ("train/loss", "val/loss", "val/eval_style"))


def test_resume_from_last_ckpt(tmp_path, sample_dir):
    run_train(tmp_path / "a", sample_dir, "logger=none", "trainer.max_steps=2", "data.train_batches_per_epoch=2")
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    run_train(tmp_path / "b", sample_dir, "logger=none", "trainer.max_steps=4", "data.train_batches_per_epoch=2",
              f"ckpt_path={last}")
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def test_last_ckpt_holds_the_final_step_when_training_stops_between_periodic_saves(tmp_path, sample_dir):
    # max_steps (like max_time) ends the run 2 steps after the step-3 save: those steps must not be lost
    run_train(tmp_path, sample_dir, "logger=none", "trainer.max_steps=5", "data.train_batches_per_epoch=5",
              "callbacks.model_checkpoint.every_n_train_steps=3")
    assert torch.load(tmp_path / "checkpoints" / "step0000003.ckpt", weights_only=True)["global_step"] == 3
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    assert not list((tmp_path / "checkpoints").glob("last-v*.ckpt"))  # one last.ckpt, not a second copy beside it


def test_a_run_without_a_periodic_save_ends_with_one_last_ckpt(tmp_path, sample_dir):
    # ModelCheckpoint writes last.ckpt at the end by itself when it saved nothing before; a second writer
    # made it keep two copies (last.ckpt and last-v1.ckpt)
    run_train(tmp_path, sample_dir, "logger=none", "trainer.max_steps=3", "data.train_batches_per_epoch=3")
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


class CrashAtStep(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_a_crash_still_writes_a_checkpoint_of_the_step_it_reached(tmp_path, sample_dir):
    # the same path as SIGTERM (Lightning raises SIGTERMException) and Ctrl-C: ModelCheckpoint.on_exception
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_train(tmp_path, sample_dir, "logger=none", "trainer.max_steps=10", "data.train_batches_per_epoch=10",
                  "+callbacks.crash._target_=test_train.CrashAtStep", "+callbacks.crash.step=2")
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def cli(*args, cwd=ROOT, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


INVERSE_FAST = ["experiment=inverse_quickstart", "model.vgg_weights=random", "model.net.widths=[16,8]", "init_from=null",
                "data.image_size=32", "data.num_workers=0", "data.val_pairs=2", "data.shuffle_buffer=4", "threads=1"]


# two processes for half a minute: slow-marked (pytest -m slow runs them)
@pytest.mark.parametrize("model", [pytest.param(FAST, id="variational", marks=pytest.mark.slow),
                                   pytest.param(INVERSE_FAST, id="inverse", marks=pytest.mark.slow)])
def test_ddp_on_two_cpu_processes_trains_and_checkpoints(tmp_path, sample_dir, model):
    # Lightning's DDP with the gloo backend: the same code path as multi-GPU, minus NCCL. The image grid
    # (rank 0 only) and the final checkpoint (all ranks) once deadlocked here.
    result = cli(*model, f"data.sample_dir={sample_dir}", f"paths.output_dir={tmp_path}", "logger=csv",
                 "trainer=ddp_cpu", "trainer.precision=32-true",
                 "trainer.max_steps=3", "data.train_batches_per_epoch=3",
                 "callbacks.model_checkpoint.every_n_train_steps=2", timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    assert "MEMBER: 2/2" in result.stderr + result.stdout
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert list(tmp_path.glob("csv/version_0/images/val_step*.jpg"))


def test_missing_shards_give_a_one_line_error(tmp_path):
    result = cli(*FAST, "data.content_shards=/nonexistent/content-*.tar", f"hydra.run.dir={tmp_path}",
                 "logger=none")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no shards match /nonexistent/content-*.tar")
    assert "Traceback" not in result.stderr


def test_swap_loss_is_refused_before_training(tmp_path):
    from train import ConfigError

    with pytest.raises(ConfigError, match="loss=swap cannot train a feed-forward model"):
        train(compose_train([*FAST, "loss=swap", f"paths.output_dir={tmp_path}"]))


@pytest.mark.slow  # two training jobs in subprocesses
def test_multirun_runs_every_job(tmp_path, sample_dir):
    result = cli("-m", "loss=gram,w2", *FAST, f"data.sample_dir={sample_dir}", "logger=none",
                 "trainer.max_steps=1", "data.train_batches_per_epoch=1", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    for job in ("0", "1"):
        checkpoint = torch.load(tmp_path / job / "checkpoints" / "last.ckpt", weights_only=True)
        assert checkpoint["config"]["loss"]["kind"] == {"0": "gram", "1": "w2"}[job]
    assert result.stdout.count("done: ") == 2


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")
                                              if not p.stem.startswith("inverse") and "_stage" not in p.stem))
def test_experiments_compose_and_build_their_model(experiment, tmp_path):
    import hydra

    cfg = compose_train([f"experiment={experiment}", f"paths.output_dir={tmp_path}", "model.vgg_weights=random"])
    assert cfg.trainer.max_steps > 0 and cfg.data.image_size % 8 == 0
    model = hydra.utils.instantiate(cfg.model)
    assert model.net.style_dim == cfg.model.style_dim
    assert set(cfg.callbacks) >= {"model_checkpoint", "image_grid"} and cfg.callbacks.model_checkpoint.save_last


def test_hparams_search_grid_is_a_multirun():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=variational_grid"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert set(cfg.hydra.sweeper.params) == {"loss", "model.style_dim", "model.kl_weight"}


def test_two_runs_with_the_same_seed_give_the_same_loss_curve_bit_for_bit(tmp_path, sample_dir):
    """fp32 on the CPU: the data stream (data.seed = seed), the initial weights and the code noise all
    follow the run's seed, so the curves agree exactly; another seed gives another curve."""
    def curve(folder, seed):
        run_train(folder, sample_dir, "logger=csv", f"seed={seed}", "trainer.max_steps=4",
                  "data.train_batches_per_epoch=4", "trainer.log_every_n_steps=1", "trainer.precision=32-true")
        rows = (folder / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
        column = rows[0].split(",").index("train/loss")
        return [row.split(",")[column] for row in rows[1:] if row.split(",")[column]]
    first, second, other = curve(tmp_path / "a", 7), curve(tmp_path / "b", 7), curve(tmp_path / "c", 8)
    assert len(first) == 4 and first == second
    assert other != first


def test_a_streak_of_nonfinite_steps_stops_the_run_naming_the_step(tmp_path, sample_dir, monkeypatch, capsys):
    from nststyle.lit.variational import VariationalStyleTransfer

    finite = VariationalStyleTransfer.losses
    monkeypatch.setattr(VariationalStyleTransfer, "losses",
                        lambda self, c, s: {**finite(self, c, s), "loss": torch.tensor(float("nan"))})
    run_train(tmp_path, sample_dir, "logger=none", "trainer.max_steps=10", "data.train_batches_per_epoch=10",
              "callbacks.stop_on_nonfinite.patience=3", "callbacks.model_checkpoint.every_n_train_steps=2")
    message = capsys.readouterr().err
    assert "stopping at step 3: 3 non-finite steps in a row" in message and "last.ckpt" in message
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_is_bf16_only_where_the_device_runs_it_natively(monkeypatch, capsys, native):
    """trainer.precision=auto (the CPU experiments'): bf16-mixed on a CPU with native bfloat16, 32-true on an
    AVX2-only one (emulated bfloat16 is many times slower there); an explicit bf16 on that CPU stays, with a warning."""
    monkeypatch.setattr(train_script, "bf16_is_fast", lambda device: native)
    cfg = compose_train(["experiment=shared_images_cpu"])
    assert cfg.trainer.precision == "auto"
    train_script.resolve_precision(cfg)
    assert cfg.trainer.precision == ("bf16-mixed" if native else "32-true")
    explicit = compose_train(["trainer.precision=bf16-mixed"])
    train_script.resolve_precision(explicit)
    assert explicit.trainer.precision == "bf16-mixed"
    assert ("no native bfloat16" in capsys.readouterr().err) is not native
