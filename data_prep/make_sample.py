#!/usr/bin/env python
"""Build the embedded sample set: content shards from scikit-image's photos and style shards of
procedurally painted textures (see nststyle.sample_set). Offline, deterministic, a few seconds.

    python data_prep/make_sample.py [--out data/sample] [--preview sheet.png]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from nststyle.sample_set import build_sample_set, content_images, style_images  # noqa: E402  (re-exported)

__all__ = ["build_sample_set", "main"]


def save_preview(path: str) -> None:
    """A contact sheet of all content and style images (to look at the textures)."""
    from nststyle.data import to_batch
    from nststyle.images import save_grid

    images = [image.convert("RGB").resize((128, 128)) for _, image in content_images() + style_images()]
    save_grid(list(to_batch(images)), path, nrow=12, size=128)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/sample", help="output folder (default: data/sample)")
    parser.add_argument("--preview", help="also save a contact sheet of the images to this PNG")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        content, style = build_sample_set(args.out, progress=True)
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"sample set in {time.perf_counter() - start:.1f} s\n  content_shards: {content}\n  style_shards: {style}")
    if args.preview:
        save_preview(args.preview)
        print(f"preview: {args.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
