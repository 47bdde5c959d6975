"""LightningDataModule over nststyle.data: (content, style) training batches and fixed validation pairs."""
from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from nststyle.data import BadSampleCounter, Epochs, PairBatches, expand_shards, first_image, fixed_images
from nststyle.sample_set import build_sample_set, sample_patterns
from nststyle.shards import list_inputs, make_shards
from nststyle.splits import KINDS, split_files


class StyleTransferDataModule(L.LightningDataModule):
    """Pairs of random ``image_size`` crops from two shard sets.

    ``content_shards`` / ``style_shards``: brace patterns or globs of WebDataset tar shards, e.g.
    ``data/sample/content-{000000..000007}.tar``. Training: endless shuffled streams, each DDP rank and
    loader worker reading its own shards; an epoch is ``train_batches_per_epoch`` batches of the
    stream. ``style_image_size`` / ``style_max_scale`` crop the paintings at a size and scale of their own
    (None: ``image_size`` / ``max_scale``). Validation: the first ``val_pairs`` images of the (sorted) validation shards, centre-cropped,
    the same every run (``val_*_shards`` default to the training shards).

    Shards can be made on the fly in ``prepare_data``: ``sample_dir`` builds the embedded sample set
    there when missing (and the shard patterns default to it); ``content_dir`` / ``style_dir`` turn
    image folders into shards under ``cache_dir`` (rebuilt when the folder's files change).
    ``images_dir`` (a folder laid out like ``../shared/images``) splits its ``content/`` and ``style/``
    with ``holdout`` (default: the package's ``holdout.tsv``): training shards without the held-back
    files and their near-duplicates, validation shards of the held-back files alone.
    """

    def __init__(self, content_shards: str | None = None, style_shards: str | None = None, image_size: int = 256,
                 batch_size: int = 8, num_workers: int = 2, val_pairs: int = 8, train_batches_per_epoch: int = 1000,
                 max_scale: float = 2.0, shuffle_buffer: int = 256, seed: int | None = None,
                 val_content_shards: str | None = None, val_style_shards: str | None = None,
                 sample_dir: str | None = None, content_dir: str | None = None, style_dir: str | None = None,
                 cache_dir: str = "data/cache", shard_size: int = 512, shard_workers: int | None = None,
                 images_dir: str | None = None, holdout: str | None = None, style_image_size: int | None = None,
                 style_max_scale: float | None = None, extra_content_dirs: list[str] | None = None,
                 extra_style_dirs: list[str] | None = None):
        super().__init__()
        # plain lists, not Hydra's ListConfig: checkpoints must load with torch.load(weights_only=True)
        extra_content_dirs = [str(folder) for folder in extra_content_dirs or []]
        extra_style_dirs = [str(folder) for folder in extra_style_dirs or []]
        self.save_hyperparameters()
        self.content_shards = content_shards or self._default_pattern("content", content_dir)
        self.style_shards = style_shards or self._default_pattern("style", style_dir)
        if images_dir:
            self.content_shards = content_shards or self._split_pattern("content", "train")
            self.style_shards = style_shards or self._split_pattern("style", "train")
            self.hparams.val_content_shards = val_content_shards or self._split_pattern("content", "holdout")
            self.hparams.val_style_shards = val_style_shards or self._split_pattern("style", "holdout")
        if not self.content_shards or not self.style_shards:
            raise ValueError("StyleTransferDataModule needs content_shards and style_shards "
                             "(or sample_dir, or content_dir and style_dir)")
        self.bad_samples = BadSampleCounter("samples")
        self._train = None
        self._val = None
        self._pairs = None
        self._resume_batches = 0

    # --------------------------------------------------------------------- shards made on the fly

    def _folder_cache(self, kind: str, folder: str) -> Path:
        # one cache per source folder, so switching folders never rebuilds or mixes shards
        digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:10]
        return Path(self.hparams.cache_dir) / f"{kind}-{Path(folder).name}-{digest}"

    def _default_pattern(self, kind: str, folder: str | None) -> str | None:
        if folder:
            return str(self._folder_cache(kind, folder) / f"{kind}-*.tar")
        if self.hparams.sample_dir:
            return sample_patterns(self.hparams.sample_dir)[kind == "style"]
        return None

    def _extra_dirs(self, kind: str) -> list[str]:
        return list(self.hparams.get(f"extra_{kind}_dirs") or [])

    def _split_cache(self, kind: str, part: str) -> Path:
        # the extra folders are part of the key: each combination keeps its own shards
        sources = [self.hparams.images_dir, *(self._extra_dirs(kind) if part == "train" else [])]
        digest = hashlib.sha256("\n".join(str(Path(s).resolve()) for s in sources).encode()).hexdigest()[:10]
        return Path(self.hparams.cache_dir) / f"{Path(self.hparams.images_dir).name}-{digest}" / f"{part}-{kind}"

    def _split_pattern(self, kind: str, part: str) -> str:
        return str(self._split_cache(kind, part) / f"{kind}-*.tar")

    def prepare_data(self) -> None:
        """Build the sample set / folder shards when configured and missing (local rank 0 only)."""
        if self.hparams.sample_dir:
            build_sample_set(self.hparams.sample_dir, progress=True)
        for kind, folder in (("content", self.hparams.content_dir), ("style", self.hparams.style_dir)):
            if folder:
                make_shards([folder], self._folder_cache(kind, folder), prefix=kind, size=self.hparams.shard_size,
                            workers=self.hparams.shard_workers, on_mismatch="rebuild")
        if self.hparams.images_dir:
            for kind in KINDS:
                training, held_back = split_files(self.hparams.images_dir, kind, self.hparams.holdout)
                if self._extra_dirs(kind):
                    training = training + list_inputs(self._extra_dirs(kind))
                for part, files in (("train", training), ("holdout", held_back)):
                    # small shards, so that every (rank, worker) reader gets its own; ~64 of them for large sets
                    make_shards(files, self._split_cache(kind, part), prefix=kind, size=self.hparams.shard_size,
                                shard_count=max(8, len(files) // 64), workers=self.hparams.shard_workers,
                                on_mismatch="rebuild")

    def check_sources(self) -> None:
        """Fail fast (``FileNotFoundError`` or ``NoImagesError``, one line) when an input that nothing will
        build is missing, or given shards hold no readable image: called by train.py before any model is
        built."""
        hp = self.hparams
        if hp.images_dir:
            for kind in KINDS:
                split_files(hp.images_dir, kind, hp.holdout)
                for folder in self._extra_dirs(kind):
                    if not Path(folder).is_dir():
                        raise FileNotFoundError(f"data.extra_{kind}_dirs: {folder} is not a folder")
        for name in ("content_dir", "style_dir"):
            if hp[name] and not Path(hp[name]).is_dir():
                raise FileNotFoundError(f"data.{name}={hp[name]} is not a folder")
        builds = hp.images_dir or hp.sample_dir or hp.content_dir or hp.style_dir  # prepare_data makes shards
        for what, pattern in (("content", self.content_shards), ("style", self.style_shards),
                              ("validation content", hp.val_content_shards),
                              ("validation style", hp.val_style_shards)):
            if not pattern:
                continue
            try:
                urls = expand_shards(pattern)
            except FileNotFoundError:
                if builds:
                    continue
                raise
            first_image(urls, what)

    # --------------------------------------------------------------------- loaders

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        content, style = expand_shards(self.content_shards), expand_shards(self.style_shards)
        if self._train is None:
            # the trainer's view of the ranks, so that loader workers started with "spawn" split correctly too
            ranks = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else None
            self._pairs = PairBatches(content, style, hp.image_size, hp.batch_size, hp.max_scale,
                                      hp.shuffle_buffer, hp.seed, bad_samples=self.bad_samples, ranks=ranks,
                                      segment=hp.train_batches_per_epoch, style_image_size=hp.style_image_size,
                                      style_max_scale=hp.style_max_scale)
            self._pairs.start = self._resume_batches
        if self._val is None:
            val_content = expand_shards(hp.val_content_shards) if hp.val_content_shards else content
            val_style = expand_shards(hp.val_style_shards) if hp.val_style_shards else style
            self._val = (fixed_images(val_content, hp.val_pairs, hp.image_size, self.bad_samples),
                         fixed_images(val_style, hp.val_pairs, hp.style_image_size or hp.image_size,
                                      self.bad_samples))

    def train_dataloader(self) -> Epochs:
        if self._train is None:
            workers = self.hparams.num_workers
            # its own generator: making the loader's iterator must not draw from the global RNG, which a
            # resumed run restores to where the interrupted one left it
            loader = DataLoader(self._pairs, batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                                pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(0))
            # one endless loader; Lightning sees epochs of train_batches_per_epoch batches
            self._train = Epochs(loader, self.hparams.train_batches_per_epoch)
        return self._train

    # ------------------------------------------------------------------- resuming (in every checkpoint)

    def state_dict(self) -> dict:
        """The training stream's position: batches trained on so far (``PairBatches`` continues there)."""
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.total if self.trainer else None
        return {"train_batches": progress.processed if progress else 0}

    def load_state_dict(self, state: dict) -> None:
        self._resume_batches = int(state.get("train_batches", 0))
        if self._pairs is not None:
            self._pairs.start = self._resume_batches

    def val_dataloader(self) -> DataLoader:
        content, style = self._val
        return DataLoader(TensorDataset(content, style), batch_size=min(self.hparams.batch_size, len(content)))

    @property
    def val_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed validation pairs (content, style), ``val_pairs x 3 x S x S``: for image grids."""
        return self._val
