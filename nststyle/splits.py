"""Training / held-back split of an images folder laid out like ``../shared/images``
(``content/`` photos, ``style/`` paintings, ``NEAR_DUPLICATES.tsv``).

The held-back list (``nststyle/holdout.tsv``, package data) names photos and paintings that feed only
validation and the evaluation; every near-duplicate of a held-back file (another copy of the same photo
or artwork) is left out of training too, so no held-back picture is ever seen in any form.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .images import IMAGE_SUFFIXES

KINDS = ("content", "style")


def default_holdout() -> Path:
    return Path(str(resources.files("nststyle") / "holdout.tsv"))


def read_holdout(path: str | Path | None = None) -> dict[str, list[str]]:
    """``{"content": [...], "style": [...]}``: files relative to the images folder, in list order."""
    held: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for line in Path(path or default_holdout()).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, file = line.split("\t")[:2]
            if kind not in held:
                raise ValueError(f"holdout list {path}: unknown kind {kind!r} (content, style)")
            held[kind].append(file.strip())
    return held


def near_duplicate_groups(images_dir: str | Path) -> list[set[str]]:
    """Groups of files that show the same scene or artwork (``NEAR_DUPLICATES.tsv``; none if absent)."""
    table = Path(images_dir) / "NEAR_DUPLICATES.tsv"
    if not table.is_file():
        return []
    rows = [line.split("\t") for line in table.read_text().splitlines()[1:] if line.strip()]
    return [set(row[2].split()) for row in rows if len(row) >= 3]


def split_files(images_dir: str | Path, kind: str, holdout: str | Path | None = None) -> tuple[list[Path], list[Path]]:
    """``(training files, held-back files)`` of ``images_dir/kind``: held-back in the list's order,
    training sorted and without any held-back file or near-duplicate of one."""
    images_dir = Path(images_dir)
    folder = images_dir / kind
    if not folder.is_dir():
        raise FileNotFoundError(f"no {kind} folder in {images_dir} (expected {folder})")
    held = read_holdout(holdout)[kind]
    missing = [file for file in held if not (images_dir / file).is_file()]
    if missing:
        raise FileNotFoundError(f"held-back {kind} files missing from {images_dir}: {', '.join(missing[:3])}")
    excluded = set(held)
    for group in near_duplicate_groups(images_dir):
        if group & excluded:
            excluded |= group
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    training = [path for path in files if f"{kind}/{path.name}" not in excluded]
    return training, [images_dir / file for file in held]
