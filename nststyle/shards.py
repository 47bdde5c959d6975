"""Image files -> WebDataset tar shards (``{prefix}-000000.tar`` ...) plus a manifest.

Each sample is ``{key}.jpg`` (RGB, shorter side at most ``size``, never upscaled) and ``{key}.json``
(source path, original size and mode, sha256 of the file bytes). The input list is sorted, so a
run is deterministic and an interrupted run resumes after its last finished shard: shards are
written to ``.tmp`` and renamed when complete, and the manifest is rewritten after each shard.
Whatever a file's problem (truncated, not an image, tiny, huge, duplicate), it is skipped with
a reason in the manifest; no input file can stop the run.
"""
from __future__ import annotations

import concurrent.futures
import glob
import hashlib
import io
import json
import os
import tarfile
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import webdataset as wds
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from nststyle.images import IMAGE_SUFFIXES, to_rgb

MANIFEST_VERSION = 1


class ShardError(ValueError):
    """Bad arguments or an output folder that cannot be resumed (one-line message)."""


@dataclass(frozen=True)
class ShardOptions:
    """Everything that decides the bytes of the shards; a resume must use the same options."""
    size: int = 512               # shorter side of the stored image (never upscaled)
    min_size: int = 64            # skip images whose shorter side is smaller
    max_pixels: int = 400_000_000  # skip images larger than this (decoding would need GBs)
    quality: int = 95             # JPEG quality
    shard_count: int = 1000       # samples per shard at most
    shard_bytes: int = 1_000_000_000  # a shard is closed once it reaches this size


# ----------------------------------------------------------------------------- inputs

def list_inputs(inputs: list[str | Path]) -> list[str]:
    """Sorted unique file paths from folders (recursive, image suffixes only), globs and ``.txt``
    lists (one path a line; relative paths are relative to the list's folder)."""
    files: set[str] = set()
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            files.update(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file() and path.suffix.lower() == ".txt":
            for line in path.read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    entry = Path(line.strip())
                    files.add(str(entry if entry.is_absolute() else path.parent / entry))
        elif path.is_file():
            files.add(item)
        elif glob.has_magic(item):
            matches = [p for p in glob.glob(item, recursive=True) if os.path.isfile(p)]
            if not matches:
                raise ShardError(f"glob matches no files: {item}")
            files.update(matches)
        else:
            raise ShardError(f"input not found: {item}")
    if not files:
        raise ShardError(f"no image files in {', '.join(map(str, inputs))}")
    return sorted(files)


# ----------------------------------------------------------------------------- one file

@contextmanager
def _no_pixel_limit():
    """We check the size ourselves (``max_pixels``) and decode large JPEGs at reduced scale, so
    PIL's decompression-bomb guard would only reject images we can handle."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def encode_file(path: str, options: ShardOptions) -> dict:
    """Read, check, convert and re-encode one file. Returns ``{"sha256", "jpg", "meta"}`` for a good
    image or ``{"sha256", "reason"}`` for one to skip; never raises for a bad file."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return {"sha256": None, "reason": f"unreadable: {error.strerror or error}"}
    digest = hashlib.sha256(data).hexdigest()
    try:
        jpg, meta = _reencode(data, options)
    except _Skip as skip:
        return {"sha256": digest, "reason": str(skip)}
    except UnidentifiedImageError:
        return {"sha256": digest, "reason": "not an image (unidentified format)"}
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError) as error:
        # PIL reports truncated/corrupt data through many exception types
        return {"sha256": digest, "reason": f"corrupt: {type(error).__name__}: {error}".splitlines()[0]}
    meta.update(source=path, sha256=digest)
    return {"sha256": digest, "jpg": jpg, "meta": meta}


class _Skip(Exception):
    """A readable image that we do not want (too small, too large)."""


def _reencode(data: bytes, options: ShardOptions) -> tuple[bytes, dict]:
    with warnings.catch_warnings(), _no_pixel_limit():
        warnings.simplefilter("ignore")  # PIL warns about odd EXIF, palette transparency, ...
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            original = {"original_size": [width, height], "original_mode": image.mode, "format": image.format}
            if min(width, height) < options.min_size:
                raise _Skip(f"too small: {width}x{height} (shorter side < {options.min_size})")
            if width * height > options.max_pixels:
                raise _Skip(f"too large: {width}x{height} (more than {options.max_pixels} pixels)")
            scale = min(1.0, options.size / min(width, height))
            # JPEG can decode at 1/2, 1/4, 1/8 scale: huge photos cost little (keeps size >= target)
            image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            image.load()
            rgb = to_rgb(image)
    if min(rgb.size) > options.size:
        scale = options.size / min(rgb.size)
        target = (max(options.size, round(rgb.width * scale)), max(options.size, round(rgb.height * scale)))
        rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=options.quality)
    return buffer.getvalue(), {**original, "size": list(rgb.size)}


# ----------------------------------------------------------------------------- shards and manifest

def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def manifest_path(out: str | Path, prefix: str) -> Path:
    return Path(out) / f"{prefix}-manifest.json"


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _inputs_digest(files: list[str]) -> str:
    return hashlib.sha256("\n".join(files).encode()).hexdigest()


class _ShardSink:
    """Writes samples into consecutive shards; a shard becomes visible (renamed from ``.tmp``)
    only when full or at the end, and then ``on_shard(entry)`` records it in the manifest."""

    def __init__(self, out: Path, prefix: str, options: ShardOptions, first_index: int, on_shard):
        self.out, self.prefix, self.options, self.on_shard = out, prefix, options, on_shard
        self.index = first_index
        self.writer = None
        self.count = self.bytes = 0

    @property
    def full(self) -> bool:
        return self.writer is not None and (self.count >= self.options.shard_count
                                            or self.bytes >= self.options.shard_bytes)

    def write(self, key: str, jpg: bytes, meta: dict) -> None:
        if self.writer is None:
            self.tmp = self.out / (shard_name(self.prefix, self.index) + ".tmp")
            # fixed mtime: the same inputs give byte-identical shards
            self.writer = wds.TarWriter(str(self.tmp), mtime=0.0)
            self.count = self.bytes = 0
        self.bytes += self.writer.write({"__key__": key, "jpg": jpg, "json": json.dumps(meta).encode()})
        self.count += 1

    def close(self, inputs_end_before: int) -> None:
        """Finish the open shard; ``inputs_end_before``: inputs up to this index are in it or skipped."""
        if self.writer is None:
            return
        self.writer.close()
        name = shard_name(self.prefix, self.index)
        os.replace(self.tmp, self.out / name)
        self.on_shard({"name": name, "count": self.count, "bytes": (self.out / name).stat().st_size,
                       "inputs_end": inputs_end_before})
        self.writer = None
        self.index += 1


def _hashes_in_shards(out: Path, shards: list[dict]) -> dict[str, str]:
    """sha256 -> source for the samples already written (needed to drop duplicates on resume)."""
    seen = {}
    for shard in shards:
        with tarfile.open(out / shard["name"]) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.load(tar.extractfile(member))
                    seen[meta["sha256"]] = meta["source"]
    return seen


def _start_manifest(out: Path, prefix: str, files: list[str], options: ShardOptions, on_mismatch: str) -> dict:
    """A fresh manifest, or the existing one when it can be resumed."""
    fresh = {"version": MANIFEST_VERSION, "prefix": prefix, "options": asdict(options), "inputs": len(files),
             "inputs_sha256": _inputs_digest(files), "complete": False, "samples": 0, "duplicates": 0,
             "shards": [], "skipped": []}
    path = manifest_path(out, prefix)
    if path.exists():
        old = json.loads(path.read_text())
        same = all(old.get(k) == fresh[k] for k in ("version", "options", "inputs", "inputs_sha256"))
        missing = [s["name"] for s in old.get("shards", []) if not (out / s["name"]).exists()]
        if same and not missing:
            return old
        if on_mismatch != "rebuild":
            why = f"shards {missing[:3]} are missing" if same else "its inputs or options differ from this run"
            raise ShardError(f"{path} cannot be resumed: {why} (use another --out, or --rebuild)")
    for stale in out.glob(f"{prefix}-[0-9]*.tar*"):
        stale.unlink()
    return fresh


def make_shards(inputs: list[str | Path] | str | Path, out: str | Path, prefix: str = "content",
                size: int = 512, shard_count: int = 1000, shard_bytes: float = 1e9, workers: int | None = None,
                min_size: int = 64, max_pixels: int = 400_000_000, quality: int = 95,
                on_mismatch: str = "error", progress: bool = True) -> dict:
    """Turn image files into shards in ``out``; returns the manifest (also ``{prefix}-manifest.json``).

    ``inputs``: folders (recursive), globs, ``.txt`` file lists or files. Resumes an interrupted run;
    a finished run returns at once. ``on_mismatch="rebuild"`` replaces shards made from other inputs
    or options instead of raising ``ShardError``. ``workers``: processes (default: all CPUs; 0 or 1
    runs in this process).
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if shard_count < 1 or shard_bytes <= 0 or size < 1:
        raise ShardError("--shard-count, --shard-bytes and --size must be positive")
    options = ShardOptions(size=size, min_size=min_size, max_pixels=int(max_pixels), quality=quality,
                           shard_count=shard_count, shard_bytes=int(shard_bytes))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = list_inputs(inputs)
    manifest = _start_manifest(out, prefix, files, options, on_mismatch)
    if manifest["complete"]:
        return manifest

    # resume after the last finished shard: forget what the unfinished one had done
    start = manifest["shards"][-1]["inputs_end"] if manifest["shards"] else 0
    manifest["skipped"] = [s for s in manifest["skipped"] if s["index"] < start]
    manifest["duplicates"] = sum(s["reason"].startswith("duplicate") for s in manifest["skipped"])
    manifest["samples"] = sum(s["count"] for s in manifest["shards"])
    for stale in out.glob(f"{prefix}-*.tar.tmp"):
        stale.unlink()
    seen = _hashes_in_shards(out, manifest["shards"])

    def on_shard(entry):
        manifest["shards"].append(entry)
        _write_json_atomic(manifest_path(out, prefix), manifest)

    sink = _ShardSink(out, prefix, options, first_index=len(manifest["shards"]), on_shard=on_shard)
    bar = tqdm(total=len(files), initial=start, desc=f"shards {prefix}", unit="img", disable=not progress)
    for index, result in _encode_all(files, start, options, workers):
        path = files[index]
        if "reason" in result:
            manifest["skipped"].append({"index": index, "path": path, "reason": result["reason"]})
        elif result["sha256"] in seen:
            manifest["skipped"].append({"index": index, "path": path,
                                        "reason": f"duplicate of {seen[result['sha256']]}"})
            manifest["duplicates"] += 1
        else:
            seen[result["sha256"]] = path
            sink.write(f"{manifest['samples']:09d}", result["jpg"], result["meta"])
            manifest["samples"] += 1
            if sink.full:  # commit at once: a crash later loses nothing of this shard
                sink.close(inputs_end_before=index + 1)
        bar.update()
    bar.close()
    sink.close(inputs_end_before=len(files))
    manifest["complete"] = True
    _write_json_atomic(manifest_path(out, prefix), manifest)
    return manifest


def _encode_all(files: list[str], start: int, options: ShardOptions, workers: int | None):
    """Yield ``(index, result)`` in input order, encoding in a process pool when ``workers > 1``."""
    indices = range(start, len(files))
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers <= 1:
        for index in indices:
            yield index, encode_file(files[index], options)
        return
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        # a bounded window of tasks keeps memory flat on millions of files
        window = iter(indices)
        while block := list(islice(window, 64 * workers)):
            results = pool.map(encode_file, [files[i] for i in block], [options] * len(block), chunksize=4)
            yield from zip(block, results)


def shard_pattern(out: str | Path, prefix: str, count: int) -> str:
    """Brace pattern naming ``count`` shards, e.g. ``data/x/content-{000000..000007}.tar``."""
    if count == 1:
        return str(Path(out) / shard_name(prefix, 0))
    return str(Path(out) / f"{prefix}-{{{0:06d}..{count - 1:06d}}}.tar")
