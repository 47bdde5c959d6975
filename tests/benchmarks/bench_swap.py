"""Benchmark: nststyle.swap.style_swap, exact and approximate (``mode="approximate"``), against the plain
reference (conv -> argmax -> one-hot -> transposed conv -> overlap division, as in tests/test_swap.py) at
relu3_1 of square crops of a real photo and a real painting, 256/384/512 px.

Each call runs in a fresh subprocess that loads the precomputed features and calls the swap once;
the three methods alternate ``--repeats`` times per size. Reported:
  time   median wall-clock seconds over the repeats (``--threads`` torch threads, else as the machine gives them);
  peak   the process's peak resident set size (VmHWM, reset just before the call) minus its RSS at
         that moment (the largest over the repeats),
         i.e. the most extra host memory the operation ever held; glibc's mmap threshold is fixed at
         1 MB so freed buffers leave the RSS (CPU only; on CUDA one would read
         torch.cuda.max_memory_allocated instead);
  agree  the fraction of content positions where the approximate search picks the exact search's style
         patch (``approximate_best_style_patches`` against ``best_style_patches``, computed once, untimed),
         and the relative L2 difference of the two swapped maps; with ``--more-pairs N``, that fraction on N more
         photo/painting pairs of ../shared/images too (untimed), with its lowest and median value.
The exact and reference outputs are compared element-wise. A reference that dies (out of memory) is
reported as skipped.

    python tests/benchmarks/bench_swap.py [--sizes 256 384 512] [--repeats 3] [--threads 1] [--more-pairs N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

TESTS = Path(__file__).resolve().parents[1]
IMAGES = Path(__file__).resolve().parents[2] / "../shared/images"
PHOTO = IMAGES / "content" / "jcj-neural-style__tubingen.jpg"
PAINTING = IMAGES / "style" / "jcj-neural-style__starry_night.jpg"


def square_crop(path: Path, size: int) -> torch.Tensor:
    from nststyle.images import load_image
    image = load_image(path)[None]
    scale = size / min(image.shape[-2:])
    image = F.interpolate(image, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    return image[..., top: top + size, left: left + size].clamp(0, 1)


def relu3_1_features(size: int, photo: Path = PHOTO, painting: Path = PAINTING) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from nststyle.features import VGGEncoder
        encoder = VGGEncoder(["relu3_1"], weights="caffe")
        with torch.no_grad():
            return encoder(square_crop(photo, size))["relu3_1"], encoder(square_crop(painting, size))["relu3_1"]
    except (ImportError, OSError) as error:  # encoder or images unavailable: features of the right shape
        print(f"  (random ReLU features: {error})")
        return torch.randn(1, 256, size // 4, size // 4).relu(), torch.randn(1, 256, size // 4, size // 4).relu()


def memory_status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (resident peak) of this process, from /proc/self/status."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def reset_peak_rss() -> None:
    """Start VmHWM afresh at the current RSS (Linux >= 4.0). ru_maxrss would not do: it also counts
    the parent's RSS at fork time."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


# exact: as style_swap runs it (screened in bfloat16 where the CPU can, then the candidates scored exactly);
# exact_float32: the search over float32 products with the C scoring pass (no screening);
# exact_pytorch: the float32 search with its scoring pass in PyTorch instead of the C kernel (nststyle.swap_kernel)
METHODS = ("exact", "exact_float32", "exact_pytorch", "approximate", "reference")


def worker(method: str, features_path: str, output_path: str, repeats: int, threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    from nststyle import swap as swap_module
    from nststyle import swap_kernel
    from nststyle.swap import style_swap
    if method == "exact_pytorch":
        swap_kernel._loaded = False
    elif method == "exact_float32":
        swap_module.can_screen = lambda content, style: False
    elif method == "exact" and not swap_kernel.available():
        raise SystemExit("the C kernel is unavailable here: exact would time the PyTorch path")
    sys.path.insert(0, str(TESTS))
    from test_swap import reference_style_swap

    def swap(content, style):
        if method == "reference":
            return reference_style_swap(content, style)
        return style_swap(content, style, mode="exact" if method.startswith("exact") else method)
    swap(torch.rand(1, 8, 8, 8), torch.rand(1, 8, 8, 8))  # load kernels outside the measurement
    content, style = torch.load(features_path)
    reset_peak_rss()
    baseline = memory_status_mb("VmRSS")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            out = swap(content, style)
        times.append(time.perf_counter() - start)
    peak = memory_status_mb("VmHWM") - baseline
    torch.save(out, output_path)
    print(json.dumps({"time": statistics.median(times), "peak_mb": peak}))


def run_case(method: str, features_path: Path, output_path: Path, repeats: int, threads: int) -> dict | None:
    # A fixed mmap threshold makes glibc hand every large buffer back to the OS when it is freed, so RSS
    # follows the live tensors (with its default dynamic threshold, freed buffers of one repeat stay resident).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    result = subprocess.run([sys.executable, __file__, "--worker", method, str(features_path), str(output_path),
                             str(repeats), str(threads)], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        reason = "killed (out of memory?)" if result.returncode < 0 else result.stderr.strip().splitlines()[-1]
        print(f"  {method}: skipped: {reason}")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def agreement(content: torch.Tensor, style: torch.Tensor) -> float:
    """Fraction of content positions whose approximate best style patch is the exact one."""
    from nststyle.swap import approximate_best_style_patches, best_style_patches
    return (approximate_best_style_patches(content, style) == best_style_patches(content, style)).float().mean().item()


def more_pairs(count: int) -> list[tuple[Path, Path]]:
    """``count`` photo/painting pairs of ../shared/images besides the benchmark's own, in name order, each photo and
    painting once."""
    photos = [path for path in sorted((IMAGES / "content").glob("*.jpg")) if path.name != PHOTO.name]
    paintings = [path for path in sorted((IMAGES / "style").glob("*.jpg")) if path.name != PAINTING.name]
    return list(zip(photos, paintings))[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--more-pairs", type=int, default=0, metavar="N",
                        help="also the approximate search's agreement on N more photo/painting pairs of ../shared/images")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; photo {PHOTO.name}, painting {PAINTING.name}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            content, style = relu3_1_features(size)
            features = Path(tmp) / f"features_{size}.pt"
            torch.save((content, style), features)
            print(f"{size} px: relu3_1 {tuple(content.shape)}, style {tuple(style.shape)}", flush=True)
            # alternate single-call subprocesses (exact, approximate, reference, exact, ...) so that changing load
            # from other work on the machine hits all alike; median time, largest peak
            runs = {method: [] for method in METHODS}
            for _ in range(args.repeats):
                for method in runs:
                    if runs[method] is not None:
                        result = run_case(method, features, Path(tmp) / f"{method}_{size}.pt", 1, args.threads)
                        runs[method] = None if result is None else runs[method] + [result]
            results = {method: None if not found else {"time": statistics.median(r["time"] for r in found),
                                                        "peak_mb": max(r["peak_mb"] for r in found)}
                       for method, found in runs.items()}
            for method, result in results.items():
                if result:
                    print(f"  {method:11s} median {result['time']:7.2f} s   peak +{result['peak_mb']:7.0f} MB",
                          flush=True)
            exact, exact_float32, exact_pytorch, approximate, reference = (results[method] for method in METHODS)
            outputs = {method: torch.load(Path(tmp) / f"{method}_{size}.pt") for method in METHODS if results[method]}
            if exact and reference:
                a, b = outputs["exact"], outputs["reference"]
                differs = ((a - b).abs() > 1e-4 * b.abs().max()).float().mean().item()
                print(f"  exact vs reference: max |diff| {(a - b).abs().max().item():.2e} (max value "
                      f"{b.abs().max().item():.1f}), {100 * differs:.3f} % of values differ; speed-up "
                      f"{reference['time'] / exact['time']:.1f}x, memory {exact['peak_mb'] / reference['peak_mb']:.3f} "
                      f"of the reference", flush=True)
            if exact and exact_float32:
                same = torch.equal(outputs["exact"], outputs["exact_float32"])
                print(f"  screened vs float32 search: {'identical' if same else 'DIFFERENT'} outputs, speed-up "
                      f"{exact_float32['time'] / exact['time']:.2f}x", flush=True)
            if exact_float32 and exact_pytorch:
                same = torch.equal(outputs["exact_float32"], outputs["exact_pytorch"])
                print(f"  C kernel vs PyTorch scoring: {'identical' if same else 'DIFFERENT'} outputs, speed-up "
                      f"{exact_pytorch['time'] / exact_float32['time']:.2f}x", flush=True)
            agree = relative = None
            if exact and approximate:
                agree = agreement(content, style)
                a, b = outputs["approximate"], outputs["exact"]
                relative = ((a - b).norm() / b.norm()).item()
                print(f"  approximate vs exact: {100 * agree:.2f} % of positions pick the same style patch, "
                      f"output relative L2 difference {relative:.4f}; "
                      f"speed-up {exact['time'] / approximate['time']:.2f}x",
                      flush=True)
            rows.append((size, exact, exact_float32, exact_pytorch, approximate, reference, agree, relative))
            if args.more_pairs:
                found = [(photo.stem, painting.stem, agreement(*relu3_1_features(size, photo, painting)))
                         for photo, painting in more_pairs(args.more_pairs)]
                print(f"  approximate vs exact on {len(found)} more pairs: "
                      + ", ".join(f"{photo} x {painting} {100 * share:.1f} %" for photo, painting, share in found)
                      + f"; lowest {100 * min(share for *_, share in found):.1f} %, median "
                      f"{100 * statistics.median(share for *_, share in found):.1f} %", flush=True)
    print("\nsize  exact_s  float32_s  pytorch_s  approx_s  speedup  agree_%  rel_diff  ref_s  exact_MB  approx_MB  ref_MB")
    cell = lambda result, key, form: format(result[key], form) if result else "-"
    for size, exact, exact_float32, exact_pytorch, approximate, reference, agree, relative in rows:
        speedup = f"{exact['time'] / approximate['time']:.2f}x" if exact and approximate else "-"
        print(f"{size:4d} {cell(exact, 'time', '8.2f'):>8s} {cell(exact_float32, 'time', '10.2f'):>10s} "
              f"{cell(exact_pytorch, 'time', '10.2f'):>10s} "
              f"{cell(approximate, 'time', '9.2f'):>9s} {speedup:>8s} "
              f"{'-' if agree is None else format(100 * agree, '8.2f'):>8s} "
              f"{'-' if relative is None else format(relative, '9.4f'):>9s} {cell(reference, 'time', '6.2f'):>6s} "
              f"{cell(exact, 'peak_mb', '9.0f'):>9s} {cell(approximate, 'peak_mb', '10.0f'):>10s} "
              f"{cell(reference, 'peak_mb', '7.0f'):>7s}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    else:
        main()
