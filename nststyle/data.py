"""Content and style image streams from WebDataset shards (no Lightning here; see nststyle.lit.datamodule).

Training reads two infinite, shuffled streams: every (DDP rank, loader worker) pair owns a disjoint
slice of the shard list, walks it in a fresh random order on every pass and shuffles samples in a
buffer; images get a random resize (shorter side in [S, max_scale*S]) and a random SxS crop. Corrupt
samples are skipped, counted (across worker processes) and logged. Validation reads a fixed,
deterministic set of centre-cropped pairs.
"""
from __future__ import annotations

import glob
import io
import logging
import math
import multiprocessing
import os
import random
from itertools import islice

import braceexpand
import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset

from nststyle.images import to_rgb

log = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")


# ----------------------------------------------------------------------------- shard lists

def expand_shards(pattern: str | list[str]) -> list[str]:
    """Shard files named by brace patterns (``a-{000000..000009}.tar``), globs and ``::``-joined lists;
    raises ``FileNotFoundError`` naming the pattern when none (or only some) exist."""
    items = pattern.split("::") if isinstance(pattern, str) else list(pattern)
    urls = []
    for item in items:
        for url in braceexpand.braceexpand(os.path.expanduser(str(item))):
            urls.extend(sorted(glob.glob(url)) if glob.has_magic(url) else [url])
    if not urls:
        raise FileNotFoundError(f"no shards match {pattern}")
    missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not os.path.exists(u)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shards of {pattern} are missing, e.g. {missing[0]}")
    return urls


def partition_shards(urls: list[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The shards one (rank, worker) reads: slot ``rank * num_workers + worker`` of ``world_size *
    num_workers`` takes every slots-th shard, so no two readers share a shard. With fewer shards than
    readers that is impossible; then readers share shards round-robin (and we warn)."""
    slots, slot = world_size * num_workers, rank * num_workers + worker
    if len(urls) >= slots:
        return urls[slot::slots]
    if slot == 0:
        log.warning("%d shards for %d readers (ranks x workers): readers will share shards; "
                    "make more, smaller shards (--shard-count)", len(urls), slots)
    return [urls[slot % len(urls)]]


def reader_info(ranks: tuple[int, int] | None = None, worker: tuple[int, int] | None = None
                ) -> tuple[int, int, int, int]:
    """(rank, world_size, worker, num_workers) of the calling loader worker. ``ranks`` = (rank,
    world_size) as the trainer knows them; without it they come from the RANK and WORLD_SIZE
    environment variables or torch.distributed (webdataset's convention; a DataLoader worker started
    with "spawn" does not see the parent's process group, so pass ``ranks`` when you can).
    ``worker`` = (role, num_workers) overrides the loader's worker id (``PairBatches`` on resume)."""
    rank, world_size, worker_id, num_workers = wds.utils.pytorch_worker_info()
    return (*(ranks or (rank, world_size)), *(worker or (worker_id, num_workers)))


class ShardStream(IterableDataset):
    """Endless ``{"url": ...}`` stream over this reader's partition of the shards, reshuffled on
    every pass; the order depends on (seed, rank, worker, pass) only when ``seed`` is given."""

    def __init__(self, urls: list[str], seed: int | str | None = None, ranks: tuple[int, int] | None = None,
                 worker: tuple[int, int] | None = None):
        super().__init__()
        self.urls, self.seed, self.ranks, self.worker = list(urls), seed, ranks, worker

    def __iter__(self):
        rank, world_size, worker, num_workers = reader_info(self.ranks, self.worker)
        mine = partition_shards(self.urls, rank, world_size, worker, num_workers)
        rng = random.Random(_reader_seed(self.seed, rank, worker, "shards"))
        while True:
            order = mine.copy()
            rng.shuffle(order)
            for url in order:
                yield {"url": url}


def _reader_seed(seed: int | str | None, rank: int, worker: int, purpose: str) -> str | bytes:
    """A seed for one reader's random.Random: fresh each run unless ``seed`` is set (a str seeds
    random.Random through sha512, so it is stable across processes, unlike hash())."""
    return os.urandom(16) if seed is None else f"{seed}/{rank}/{worker}/{purpose}"


# ----------------------------------------------------------------------------- decoding and crops

def sample_image(sample: dict, min_side: int | None = None) -> Image.Image:
    """Decode the image of a WebDataset sample to RGB. With ``min_side``, JPEGs are decoded at a
    reduced scale (1/2, 1/4, 1/8) as long as the shorter side stays >= ``min_side``: much faster."""
    key = next((k for k in IMAGE_KEYS if k in sample), None)
    if key is None:
        raise ValueError(f"sample {sample.get('__key__')} has no image (keys: {sorted(sample)})")
    image = Image.open(io.BytesIO(sample[key]))
    if min_side is not None:
        scale = min_side / min(image.size)
        image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    image.load()
    return to_rgb(image)


def random_resized_crop(image: Image.Image, size: int, max_scale: float, rng: random.Random) -> Image.Image:
    """Resize the shorter side to a random length in [size, max_scale*size], then take a random
    size x size crop (done as one resample of the crop box, so large images cost little)."""
    width, height = image.size
    shorter = rng.uniform(size, max_scale * size)
    box_side = min(width, height) * size / shorter  # the crop, in source pixels
    left = rng.uniform(0, width - box_side)
    top = rng.uniform(0, height - box_side)
    box = (left, top, left + box_side, top + box_side)
    return image.resize((size, size), Image.Resampling.BILINEAR, box=box)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, centre ``size x size`` crop."""
    width, height = image.size
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    return image.resize((size, size), Image.Resampling.BILINEAR, box=box)


def to_batch(images: list[Image.Image] | list[np.ndarray]) -> torch.Tensor:
    """RGB images (PIL or HxWx3 uint8 arrays) of one size -> ``Bx3xHxW`` float tensor in [0, 1].
    Done in numpy on purpose: small torch ops in loader code contend for the trainer's threads."""
    stacked = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    return torch.from_numpy(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255))


# ----------------------------------------------------------------------------- bad samples

class BadSampleCounter:
    """A webdataset exception handler: skip the sample, count it in shared memory (so the count
    covers all loader workers) and log a warning with the count (the first ten, then at powers of 2)."""

    def __init__(self, name: str = "samples"):
        self.name = name
        # a spawn-context lock can be handed to forked and spawned processes alike (DataLoader
        # workers, ddp_spawn); a fork-context one refuses to be pickled for spawn
        self.value = multiprocessing.get_context("spawn").Value("l", 0)

    @property
    def count(self) -> int:
        return self.value.value

    def __call__(self, error: Exception) -> bool:
        with self.value.get_lock():
            self.value.value += 1
            count = self.value.value
        if count <= 10 or count & (count - 1) == 0:
            message = str(error).splitlines()[0] if str(error) else ""
            log.warning("skipped %d corrupt %s so far; latest: %s: %s", count, self.name,
                        type(error).__name__, message[:200])
        return True


# ----------------------------------------------------------------------------- pipelines

class RandomCrops:
    """Pipeline stage: samples -> random ``SxSx3`` uint8 crops; undecodable samples go to ``on_error``."""

    def __init__(self, image_size: int, max_scale: float, seed: int | str | None, on_error: BadSampleCounter,
                 ranks: tuple[int, int] | None = None, worker: tuple[int, int] | None = None):
        self.image_size, self.max_scale, self.seed, self.on_error = image_size, max_scale, seed, on_error
        self.ranks, self.worker = ranks, worker

    def __call__(self, samples):
        rank, _, worker, _ = reader_info(self.ranks, self.worker)
        rng = random.Random(_reader_seed(self.seed, rank, worker, "crops"))
        for sample in samples:
            try:
                image = sample_image(sample, min_side=self.image_size)
                yield np.asarray(random_resized_crop(image, self.image_size, self.max_scale, rng))
            except Exception as error:  # noqa: BLE001 -- any undecodable sample is skipped and counted
                error.args = (f"{sample.get('__url__')} {sample.get('__key__')}: {error}",)
                self.on_error(error)


class ReaderShuffle:
    """Pipeline stage: a shuffle buffer seeded per reader (a seeded rng built in the main process
    would be copied into every worker, which would then shuffle identically)."""

    def __init__(self, bufsize: int, seed: int | str | None, ranks: tuple[int, int] | None = None,
                 worker: tuple[int, int] | None = None):
        self.bufsize, self.seed, self.ranks, self.worker = bufsize, seed, ranks, worker

    def __call__(self, samples):
        rank, _, worker, _ = reader_info(self.ranks, self.worker)
        rng = random.Random(_reader_seed(self.seed, rank, worker, "samples"))
        return wds.shuffle(self.bufsize, initial=max(1, self.bufsize // 4), rng=rng)(samples)


def image_stream(urls: list[str], image_size: int, max_scale: float = 2.0, shuffle_buffer: int = 256,
                 seed: int | str | None = None, on_error: BadSampleCounter | None = None,
                 ranks: tuple[int, int] | None = None, worker: tuple[int, int] | None = None) -> wds.DataPipeline:
    """Endless stream of random ``SxSx3`` uint8 crops (arrays; ``to_batch`` makes tensors) from this
    reader's shards."""
    on_error = on_error or BadSampleCounter()
    return wds.DataPipeline(ShardStream(urls, seed, ranks, worker), wds.tarfile_to_samples(handler=on_error),
                            ReaderShuffle(shuffle_buffer, seed, ranks, worker),
                            RandomCrops(image_size, max_scale, seed, on_error, ranks, worker))


class PairBatches(IterableDataset):
    """Endless ``(content, style)`` batches, each ``Bx3xSxS`` float in [0, 1]; use with
    ``DataLoader(PairBatches(...), batch_size=None, num_workers=N)`` (batches are made in the workers).
    Paintings may be cropped at a size and scale of their own (``style_image_size``, ``style_max_scale``;
    None: as the photos): larger crops give style targets that cover more of each painting.

    With a ``seed`` the stream is a function of (seed, batch index), whatever the number of restarts:
    it is cut into segments of ``segment`` batches, each read from a shard order and shuffle derived
    from (seed, segment), and loader worker ``w`` makes the batches ``g`` with ``g % workers == (start
    + w) % workers``. A resumed run sets ``start`` (batches already trained on) and continues with
    the very batches an uninterrupted run would have seen: it re-reads at most ``segment / workers``
    batches per worker to get there (none when it resumes on a segment boundary)."""

    def __init__(self, content_urls: list[str], style_urls: list[str], image_size: int = 256, batch_size: int = 8,
                 max_scale: float = 2.0, shuffle_buffer: int = 256, seed: int | None = None,
                 bad_samples: BadSampleCounter | None = None, ranks: tuple[int, int] | None = None,
                 segment: int = 1000, style_image_size: int | None = None, style_max_scale: float | None = None):
        super().__init__()
        if segment < 1:
            raise ValueError(f"segment must be >= 1 batch, got {segment}")
        self.bad_samples = bad_samples or BadSampleCounter("samples")
        self.urls, self.batch_size = (content_urls, style_urls), batch_size
        self.image_sizes = (image_size, style_image_size or image_size)
        self.max_scales = (max_scale, style_max_scale or max_scale)
        self.shuffle_buffer, self.seed, self.ranks = shuffle_buffer, seed, ranks
        self.segment, self.start = segment, 0

    def _batches(self, seeds: tuple, worker: tuple[int, int] | None):
        content, style = (image_stream(urls, size, max_scale, self.shuffle_buffer, seed, self.bad_samples,
                                       self.ranks, worker)
                          for urls, size, max_scale, seed in zip(self.urls, self.image_sizes, self.max_scales, seeds))
        pairs = zip(iter(content), iter(style))
        while batch := list(islice(pairs, self.batch_size)):
            content, style = zip(*batch)
            yield to_batch(content), to_batch(style)

    def __iter__(self):
        if self.seed is None:  # fresh randomness every run: nothing to reproduce
            yield from self._batches((None, None), None)
            return
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        role = (self.start + worker) % workers
        index = self.start + worker  # the global index of the next batch this worker makes
        while True:
            segment = index // self.segment
            # content and style get different seeds, so that their readers do not walk in lockstep
            seeds = (f"{self.seed}/segment{segment}/content", f"{self.seed}/segment{segment}/style")
            batches = self._batches(seeds, (role, workers))
            for _ in range((index - segment * self.segment) // workers):  # this role's earlier batches
                next(batches)
            while index < (segment + 1) * self.segment:
                yield next(batches)
                index += workers


class Epochs:
    """Give an endless iterable a length: each ``iter()`` yields the next ``length`` items of ONE
    underlying iterator, so epochs (checkpoint/validation cadence) do not restart loader workers."""

    def __init__(self, iterable, length: int):
        self.iterable, self.length = iterable, length
        self._iterator = None

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        if self._iterator is None:
            self._iterator = iter(self.iterable)
        return islice(self._iterator, self.length)


class NoImagesError(ValueError):
    """Shards that hold no decodable image (one line, for train.py)."""


def first_image(urls: list[str], what: str) -> Image.Image:
    """The first decodable image of ``urls`` (read in order, stopping there: one sample for healthy
    shards); raises ``NoImagesError`` when none is, before a training stream would skip bad samples
    forever."""
    failures = BadSampleCounter(what)
    samples = 0
    for sample in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(handler=failures)):
        samples += 1
        try:
            return sample_image(sample)
        except Exception as error:  # noqa: BLE001
            failures(error)
    raise NoImagesError(f"no readable image in the {what} shards ({len(urls)} shards, e.g. {urls[0]}: "
                        f"{samples} samples, {failures.count} unreadable)")


def fixed_images(urls: list[str], count: int, image_size: int, on_error: BadSampleCounter | None = None
                 ) -> torch.Tensor:
    """The first ``count`` decodable images of ``urls`` (in order), centre-cropped: ``count x 3 x S x S``.
    Cycles through the images when the shards hold fewer than ``count``."""
    on_error = on_error or BadSampleCounter()
    images = []
    for sample in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(handler=on_error)):
        try:
            images.append(np.asarray(center_crop(sample_image(sample), image_size)))
        except Exception as error:  # noqa: BLE001
            on_error(error)
        if len(images) == count:
            break
    if not images:
        raise ValueError(f"no decodable images in {urls[0]} ... ({len(urls)} shards)")
    return to_batch([images[i % len(images)] for i in range(count)])
