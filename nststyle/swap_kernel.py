"""The exact style swap's scoring pass in C (``swap_kernel.c``), compiled on first use with the machine's C
compiler and loaded with ctypes: no build step at install time, no extra package.

``best_style_patches`` uses it for float32 maps on the CPU, where the scoring pass is memory-bound: after the
matrix product of a band, the PyTorch path streams the ~150 MB product buffer through 2k shifted-sum passes, a
scaling pass and a max pass; the kernel makes one pass over it, summing each patch score in registers from the
neighbouring rows it reads (mostly from cache), and keeps the running best itself
(``tests/benchmarks/bench_swap.py`` prints both). The kernel sums in the PyTorch path's order and keeps the lower
index on ties, so both choose the same patches (``tests/test_swap.py``). ``candidate_scores`` computes the exact
scores of given candidate patches (the screened search's survivors, the approximate mode's second stage) from the
maps' pixel tables, without gathering the patches first.

Without a C compiler (or with ``NSTSTYLE_SWAP_KERNEL=0``) the PyTorch path runs instead, with a one-line warning
when a compiler was there but failed. The library is cached in ``$NSTSTYLE_CACHE`` (default
``~/.cache/nststyle``), keyed by the source, the compiler flags and the CPU's instruction sets (``-march=native``).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

SOURCE = Path(__file__).with_name("swap_kernel.c")
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared", "-pthread"]
_loaded: ctypes.CDLL | bool | None = None  # None: not tried yet; False: unavailable


def cache_dir() -> Path:
    if os.environ.get("NSTSTYLE_CACHE"):
        return Path(os.environ["NSTSTYLE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nststyle"


def _cpu_signature() -> str:
    """The instruction sets ``-march=native`` compiles for (a cache shared by other CPUs gets another file)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    configured = (sysconfig.get_config_var("CC") or "").split()
    for candidate in ([configured[0]] if configured else []) + ["cc", "gcc", "clang"]:
        if shutil.which(candidate):
            return candidate
    return None


def _build() -> ctypes.CDLL | None:
    compiler = _compiler()
    if compiler is None:
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), _cpu_signature().encode(),
                                     platform.machine().encode()])).hexdigest()[:16]
    library = cache_dir() / f"swap_kernel-{key}.so"
    if not library.exists():
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as folder:
            built = Path(folder, library.name)
            result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], capture_output=True, text=True,
                                    timeout=300)
            if result.returncode:
                warnings.warn(f"nststyle: the style swap's C kernel did not compile ({compiler}: "
                              f"{result.stderr.strip().splitlines()[-1:]}); using the PyTorch path", RuntimeWarning)
                return None
            os.replace(built, library)  # atomic: a concurrent process sees no half-written library
    lib = ctypes.CDLL(str(library))
    lib.nststyle_swap_band.restype = ctypes.c_int
    lib.nststyle_swap_band.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 9 + [ctypes.c_int]
    lib.nststyle_screen_band.restype = ctypes.c_int
    lib.nststyle_screen_band.argtypes = ([ctypes.c_void_p] * 6 + [ctypes.c_float] + [ctypes.c_int64] * 10
                                         + [ctypes.c_int])
    lib.nststyle_candidate_scores.restype = None
    lib.nststyle_candidate_scores.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 6 + [ctypes.c_int]
    lib.nststyle_rank_candidates.restype = ctypes.c_int
    lib.nststyle_rank_candidates.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 5 + [ctypes.c_int]
    lib.nststyle_rank_supported.restype = ctypes.c_int
    lib.nststyle_rank_supported.argtypes = []
    return lib


def _build_or_warn() -> ctypes.CDLL | None:
    try:
        return _build()
    except (OSError, subprocess.SubprocessError) as error:  # unwritable cache, a hung compiler, a library that won't load
        warnings.warn(f"nststyle: the style swap's C kernel is unavailable ({error}); using the PyTorch path",
                      RuntimeWarning)
        return None


def available() -> bool:
    """Whether the kernel is built and loaded (building it on the first call)."""
    global _loaded
    if _loaded is None:
        _loaded = os.environ.get("NSTSTYLE_SWAP_KERNEL", "1") != "0" and (_build_or_warn() or False)
    return bool(_loaded)


def score_band(products: torch.Tensor, inverse_norms: torch.Tensor, best_score: torch.Tensor,
               best_index: torch.Tensor, width: int, style_width: int, patch_size: int, stride: int,
               band_rows: int, first_row: int, style_columns: int) -> None:
    """Update ``best_score``/``best_index`` (``H*W``, float32 / int64) of one content map from the band's
    ``H*W x L`` pixel products and the band's ``1/||patch||`` (``band_rows x style_width`` from its first row);
    what ``best_style_patches``' shifted sums, scaling and max do, in place. All contiguous float32 on the CPU."""
    height = products.shape[0] // width
    failed = _loaded.nststyle_swap_band(
        products.data_ptr(), inverse_norms.data_ptr(), best_score.data_ptr(), best_index.data_ptr(),
        products.shape[1], height, width, style_width, patch_size, stride, band_rows, first_row, style_columns,
        torch.get_num_threads())
    if failed:
        raise MemoryError("the style swap's C kernel could not allocate its row buffers")


def screen_band(products: torch.Tensor, inverse_norms: torch.Tensor, best_score: torch.Tensor,
                candidates: torch.Tensor, candidate_scores: torch.Tensor, counts: torch.Tensor, ratio: float,
                width: int, style_width: int, patch_size: int, stride: int, band_rows: int, first_row: int,
                style_columns: int) -> None:
    """The screening pass of ``best_style_patches`` over one band's bfloat16 pixel products: update
    ``best_score`` (``H*W`` float32, the best approximate score at each content patch corner) and, per content
    patch position, the patches scoring at least ``ratio`` times the running best (``candidates`` int64 /
    ``candidate_scores`` float32, ``P x capacity``; ``counts`` int32 ``P``, -1 where more than ``capacity`` of
    them were found). All contiguous, on the CPU."""
    height = products.shape[0] // width
    failed = _loaded.nststyle_screen_band(
        products.data_ptr(), inverse_norms.data_ptr(), best_score.data_ptr(), candidates.data_ptr(),
        candidate_scores.data_ptr(), counts.data_ptr(), ratio, candidates.shape[1], products.shape[1], height, width,
        style_width, patch_size, stride, band_rows, first_row, style_columns, torch.get_num_threads())
    if failed:
        raise MemoryError("the style swap's C kernel could not allocate its row buffers")


def candidate_scores(content_pixels: torch.Tensor, style_pixels: torch.Tensor, content_corners: torch.Tensor,
                     style_corners: torch.Tensor, patch_size: int, width: int, style_width: int) -> torch.Tensor:
    """``P x K`` exact inner products of the ``k x k`` content patches at ``content_corners`` (``P``, flat corner
    pixel indices) with the style patches at ``style_corners`` (``P x K``), from ``pixels x channels`` tables of the
    two maps (``width``, ``style_width``: their widths): ``swap._candidate_scores`` without gathering the patches.
    float32 and int64, contiguous, on the CPU."""
    scores = torch.empty(style_corners.shape, dtype=torch.float32)
    _loaded.nststyle_candidate_scores(
        content_pixels.data_ptr(), style_pixels.data_ptr(), content_corners.data_ptr(), style_corners.data_ptr(),
        scores.data_ptr(), style_corners.shape[0], style_corners.shape[1], content_pixels.shape[1], patch_size, width,
        style_width, torch.get_num_threads())
    return scores


RANK_TILE = 64  # style patches per register tile of nststyle_rank_candidates (16 x TILE_VECTORS in swap_kernel.c)


def can_rank() -> bool:
    """Whether ``rank_candidates`` runs here: the kernel is loaded and was compiled with AVX512-BF16."""
    return available() and bool(_loaded.nststyle_rank_supported())


def rank_candidates(queries: torch.Tensor, keys: torch.Tensor, count: int) -> torch.Tensor:
    """``Nc x count`` indices of the style patches (rows of the ``Ns x D`` bfloat16 ``keys``) with the highest
    approximate scores ``<q, k>`` for each content patch (rows of the ``Nc x D`` bfloat16 ``queries``), in no
    particular order: the ``Nc x Ns`` products and their top-k in one pass that never holds the products (float32
    sums of bfloat16 products, AVX512-BF16). Needs ``count <= Ns``. Contiguous, on the CPU."""
    odd = queries.shape[1] % 2  # dimensions go in pairs
    queries = F.pad(queries, (0, odd)).contiguous()
    pairs = queries.shape[1] // 2
    padded = F.pad(keys, (0, odd, 0, -keys.shape[0] % RANK_TILE))
    packed = padded.view(-1, 16, pairs, 2).transpose(1, 2).contiguous()  # blocks of 16 patches: pairs x lanes x 2
    candidates = torch.zeros(queries.shape[0], count, dtype=torch.long)
    scores = torch.empty(queries.shape[0], count)
    failed = _loaded.nststyle_rank_candidates(packed.data_ptr(), queries.data_ptr(), candidates.data_ptr(),
                                              scores.data_ptr(), queries.shape[0], keys.shape[0], padded.shape[0],
                                              pairs, count, torch.get_num_threads())
    if failed:
        raise MemoryError("the style swap's C kernel could not allocate its ranking buffers")
    return candidates
