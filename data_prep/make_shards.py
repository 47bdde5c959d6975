#!/usr/bin/env python
"""Turn image folders, globs or file lists into WebDataset shards (see nststyle.shards).

    python data_prep/make_shards.py /data/coco/train2017 --out data/coco --prefix content
    python data_prep/make_shards.py wikiart/ --out data/wikiart --prefix style --workers 8

Re-running with the same inputs and options resumes after the last finished shard.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from nststyle.shards import ShardError, make_shards, shard_pattern  # noqa: E402  (re-exported for scripts)

__all__ = ["make_shards", "shard_pattern", "main"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="folder (recursive), glob or .txt file list")
    parser.add_argument("--out", required=True, help="output folder for the shards and the manifest")
    parser.add_argument("--prefix", default="content", help="shard names: PREFIX-000000.tar (default: content)")
    parser.add_argument("--size", type=int, default=512, help="shorter side of stored images; never upscaled")
    parser.add_argument("--shard-count", type=int, default=1000, help="samples per shard at most")
    parser.add_argument("--shard-bytes", type=float, default=1e9, help="bytes per shard at most")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    parser.add_argument("--min-size", type=int, default=64, help="skip images whose shorter side is smaller")
    parser.add_argument("--max-pixels", type=float, default=4e8, help="skip images with more pixels")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality")
    parser.add_argument("--rebuild", action="store_true",
                        help="replace shards in --out made from other inputs or options instead of stopping")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        manifest = make_shards(args.inputs, args.out, prefix=args.prefix, size=args.size,
                               shard_count=args.shard_count, shard_bytes=args.shard_bytes, workers=args.workers,
                               min_size=args.min_size, max_pixels=int(args.max_pixels), quality=args.quality,
                               on_mismatch="rebuild" if args.rebuild else "error")
    except (ShardError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    shards = manifest["shards"]
    print(f"{manifest['samples']} images in {len(shards)} shards "
          f"({sum(s['bytes'] for s in shards) / 1e6:.1f} MB), skipped {len(manifest['skipped'])} "
          f"({manifest['duplicates']} duplicates) of {manifest['inputs']} files")
    for entry in manifest["skipped"][:20]:
        print(f"  skipped {entry['path']}: {entry['reason']}")
    if len(manifest["skipped"]) > 20:
        print(f"  ... see {Path(args.out) / (args.prefix + '-manifest.json')}")
    if shards:
        print(f"shards: {shard_pattern(args.out, args.prefix, len(shards))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
