"""Temporal consistency of video stylisation: ours with and without the consistency blend, and the Magenta model
frame by frame, on synthetic clips whose motion is known exactly and on a clip with independent motion.

    python tests/benchmarks/bench_video.py [--threads 1] [--clips pan zoom real] [--frames 48] [--consistency 0 0.5 0.7]
        [--write-clip real.mp4]   # also save the third clip (then: python infer.py content=real.mp4 ...)

Clips (384 x 256, from photos of ../shared/images/content; nothing is written unless asked):
- ``pan``: a window sliding 4 px a frame over a photo (exact flow: 4 px);
- ``zoom``: a centred zoom-in of 0.8 % a frame (exact flow: ``(p - centre) * (ratio - 1)``);
- ``real``: a slow pan and zoom over one photo with a patch of another moving across it (occluding and
  revealing the background) and faint sensor noise; measured along the DIS flow of its own frames.

Figures (RGB in [0, 1]; lower is steadier): ``gap``: the temporal gap, the mean squared difference between
output t+1 and output t moved by the exact motion, over the pixels visible in both (synthetic clips; the photo
clip itself scores 0); ``warp``: Lai et al.'s warping error, the same along the optical flow of the INPUT frames
with its occlusion mask (every clip). Per-frame quality: ``nststyle.metrics.StyleMetrics``'s content, style and
local figures, the mean over every 6th frame (frame by frame is the single-image figure). ``ms/frame``: the
median time of a frame (model, flow, blend), ``fps`` its inverse.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from nststyle.evaluate import MagentaSystem
from nststyle.flow import inside_frame, input_motion, mean_temporal_error
from nststyle.images import load_image
from nststyle.metrics import StyleMetrics
from nststyle.stylize import load_stylizer
from nststyle.video import TemporalBlend, frame_styler, to_frame, to_tensor

WIDTH, HEIGHT = 384, 256
PHOTOS = "../shared/images/content"
PAINTING = "../shared/images/style/AdaIN-style__brushstrokes.jpg"
PAN_PHOTO, ZOOM_PHOTO = "jcj-neural-style__golden_gate.jpg", "titu1994-NST__Kinkaku-ji.jpg"
REAL_PHOTO, REAL_SPRITE = "ArtFlow__stradun-cover.jpg", "style-swap__gentlecat.png"
PAN_STEP, ZOOM_RATIO = 4, 0.992
QUALITY_EVERY = 6


def read_rgb(path: str | Path, height: int, min_width: int = 0) -> np.ndarray:
    """An image as ``HxWx3`` uint8 RGB, at least ``height`` px tall and ``min_width`` wide."""
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    scale = max(height / image.shape[0], min_width / image.shape[1])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def pan_clip(photo: np.ndarray, frames: int) -> tuple[list[np.ndarray], list]:
    """Frames of a window sliding ``PAN_STEP`` px right a frame, and per pair (flow to previous, visible mask)."""
    top = (photo.shape[0] - HEIGHT) // 2
    clip = [np.ascontiguousarray(photo[top: top + HEIGHT, t * PAN_STEP: t * PAN_STEP + WIDTH]) for t in range(frames)]
    flow = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    flow[..., 0] = PAN_STEP  # frame t+1 at x shows what frame t shows at x + step
    return clip, [(flow, inside_frame(flow))] * (frames - 1)


def zoom_grid(scale: float, centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    return (centre[0] + (xs - (WIDTH - 1) / 2) * scale, centre[1] + (ys - (HEIGHT - 1) / 2) * scale)


def zoom_clip(photo: np.ndarray, frames: int, ratio: float = ZOOM_RATIO, pan: float = 0.0):
    """A zoom into the photo's centre (each frame's field ``ratio`` times the previous one's; the photo is read
    magnified, never minified: no aliasing), optionally drifting ``pan`` photo px a frame; and per pair the
    exact flow to the previous frame when ``pan`` is 0."""
    height, width = photo.shape[:2]
    scale0 = min((height - 1) / (HEIGHT - 1), (width - 1 - pan * frames) / (WIDTH - 1), 1.0)
    clip = []
    for t in range(frames):
        centre = ((width - 1) / 2 - pan * frames / 2 + pan * t, (height - 1) / 2)
        map_x, map_y = zoom_grid(scale0 * ratio ** t, centre)
        clip.append(cv2.remap(photo, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    flow = np.stack([(xs - (WIDTH - 1) / 2) * (ratio - 1), (ys - (HEIGHT - 1) / 2) * (ratio - 1)], -1)
    return clip, [(flow, inside_frame(flow))] * (frames - 1)


def real_clip(photo: np.ndarray, sprite: np.ndarray, frames: int, seed: int = 0) -> list[np.ndarray]:
    """A slow pan and zoom with a patch of ``sprite`` moving across (6, 2) px a frame and faint noise."""
    background, _ = zoom_clip(photo, frames, ratio=0.996, pan=1.5)
    patch = cv2.resize(sprite, (120, 90), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    clip = []
    for t, frame in enumerate(background):
        frame = frame.copy()
        x, y = 10 + 6 * t, 40 + 2 * t
        visible = frame[y: y + 90, x: x + 120]
        visible[:] = patch[: visible.shape[0], : visible.shape[1]]
        noise = rng.normal(0, 2.0, frame.shape)
        clip.append((frame + noise).clip(0, 255).astype(np.uint8))
    return clip


def stylised_by_ours(styler, clip: list[np.ndarray], consistency: float) -> tuple[list[np.ndarray], list[float]]:
    """Outputs in [0, 1] and seconds per frame (model, flow and blend)."""
    blend, outputs, seconds = TemporalBlend(consistency), [], []
    for frame in clip:
        start = time.perf_counter()
        outputs.append(blend(frame, to_frame(styler(to_tensor(frame)))))
        seconds.append(time.perf_counter() - start)
    return outputs, seconds


def stylised_by_magenta(magenta, painting: torch.Tensor, clip: list[np.ndarray]):
    outputs, seconds = [], []
    for frame in clip:
        start = time.perf_counter()
        outputs.append(to_frame(magenta(to_tensor(frame), painting, None)))
        seconds.append(time.perf_counter() - start)
    return outputs, seconds


def quality(metrics: StyleMetrics, painting_target: dict, clip, outputs) -> dict[str, float]:
    figures = [metrics(torch.from_numpy(outputs[t]).permute(2, 0, 1)[None], to_tensor(clip[t]), painting_target)
               for t in range(0, len(clip), QUALITY_EVERY)]
    return {name: statistics.mean(f[name] for f in figures) for name in ("content", "style", "local")}


def write_clip(clip: list[np.ndarray], path: Path, rate: int = 24) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index, frame in enumerate(clip):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--consistency", type=float, nargs="+", default=[0.0, 0.5, 0.7])
    parser.add_argument("--ckpt", default="variational")
    parser.add_argument("--painting", default=PAINTING)
    parser.add_argument("--photos", default=PHOTOS)
    parser.add_argument("--clips", nargs="+", default=["pan", "zoom", "real"], choices=["pan", "zoom", "real"])
    parser.add_argument("--no-magenta", action="store_true")
    parser.add_argument("--write-clip", type=Path, default=None, help="save the 'real' clip here (an .mp4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photos = Path(args.photos)
    clips = {"pan": pan_clip(read_rgb(photos / PAN_PHOTO, HEIGHT, WIDTH + PAN_STEP * args.frames),
                                args.frames),
             "zoom": zoom_clip(read_rgb(photos / ZOOM_PHOTO, HEIGHT + 64), args.frames)}
    real = real_clip(read_rgb(photos / REAL_PHOTO, HEIGHT + 64), read_rgb(photos / REAL_SPRITE, 180), args.frames)
    clips["real"] = (real, None)
    if args.write_clip:
        write_clip(real, args.write_clip)

    stylizer = load_stylizer(args.ckpt, "cpu", precision="auto")
    painting = load_image(args.painting, max_size=max(WIDTH, HEIGHT))[None]
    metrics = StyleMetrics("caffe")
    painting_target = metrics.painting_target(painting)
    magenta = None if args.no_magenta else MagentaSystem()
    print(f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}, {args.ckpt} ({stylizer.precision}), "
          f"painting {Path(args.painting).name}, {args.frames} frames of {WIDTH} x {HEIGHT}")
    print("| clip | system | gap (exact motion) | warping error (input flow) | content | style | local | ms/frame | fps |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (clip, exact) in clips.items():
        if name not in args.clips:
            continue
        flow_motion = input_motion(clip)
        styler = frame_styler(stylizer, [painting], "stylize", to_tensor(clip[0]))
        runs = {f"ours, consistency {c:g}": stylised_by_ours(styler, clip, c) for c in args.consistency}
        if magenta is not None:
            runs["Magenta, frame by frame"] = stylised_by_magenta(magenta, painting, clip)
        for system, (outputs, seconds) in runs.items():
            gap = f"{mean_temporal_error(outputs, exact):.5f}" if exact else "-"
            warping = mean_temporal_error(outputs, flow_motion)
            figures = quality(metrics, painting_target, clip, outputs)
            per_frame = statistics.median(seconds[1:])
            print(f"| {name} | {system} | {gap} | {warping:.5f} | {figures['content']:.3f} | {figures['style']:.3f} "
                  f"| {figures['local']:.3f} | {per_frame * 1000:.0f} | {1 / per_frame:.1f} |", flush=True)
        if name == "pan":
            photo_gap = mean_temporal_error([frame / 255 for frame in clip], exact)
            print(f"| pan | the photo clip itself | {photo_gap:.5f} | | | | | | |")


if __name__ == "__main__":
    main()
