"""Stylise video clips frame by frame without flicker.

    python infer.py content=clip.mp4 style=painting.jpg output=out.mp4           # any clip FFmpeg reads
    python infer.py content=frames/ style=painting.jpg output=out.mp4 fps=24     # a folder of frames
    python infer.py content=clips/ style=painting.jpg output=out/styled.mp4     # every clip of a folder

    styler = frame_styler(stylizer, [painting], "stylize", first_frame)        # the painting encoded once
    for output in stylize_frames(frames, styler, consistency=0.5): ...           # HxWx3 uint8 in and out

A feed-forward model stylises each frame on its own, so small changes between frames (noise, a sub-pixel
move) become large changes of its strokes: flicker. Here the style is summarised once per clip, and each
stylised frame is blended with the previous *output*, warped onto it along the optical flow of the *input*
frames (``nststyle.flow``: DIS flow, occlusions by the forward-backward check). Where the flow is reliable
the output then follows the scene instead of being redrawn; where the scene is new (occluded or entering
pixels) the frame's own stylisation shows. ``consistency`` is the weight of the warped history (0: frame by
frame); a scene cut (few pixels tracked) starts afresh.

Frames are decoded, stylised and encoded one at a time (PyAV), so memory does not grow with the clip; the
audio packets are copied unchanged. The clip is written under a temporary name in the output's folder and
renamed once complete: an error never leaves a half-written file that looks whole.

PyAV and OpenCV are optional dependencies (``pip install "nststyle[video]"``).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

try:  # optional (pip install "nststyle[video]"): without them the rest of nststyle works and video says so
    import av
    import cv2
except ImportError:
    av = cv2 = None

from .flow import FlowEstimator, grey, occlusion_free, warp
from .images import IMAGE_SUFFIXES, MIN_SIDE, ImageError, list_images, load_image, match_color, open_image
from .drivers import output_path
from .errors import StylizeError
from .stylizers import Stylizer, VariationalStylizer

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".gif")
# the encoder and its options per output container; yuv420p (what players expect) needs even sides
ENCODERS = {".webm": ("libvpx", "yuv420p", {"crf": "10", "b": "2M", "deadline": "realtime", "cpu-used": "8"}),
            ".gif": ("gif", "rgb8", {})}
DEFAULT_ENCODER = ("libx264", "yuv420p", {"crf": "18", "preset": "veryfast"})
DEFAULT_FRAME_RATE = 25  # a folder of frames carries no rate
# frames larger than this are refused before decoding (PIL's limit for images: ~9500 x 9500, 270 MB a frame)
MAX_FRAME_PIXELS = Image.MAX_IMAGE_PIXELS
# below this share of tracked pixels the previous output is no help: a scene cut, start afresh
MIN_TRACKED = 0.3
# the occlusion mask is softened over a few pixels so that history fades in and out without a seam
MASK_BLUR = 5
DEFAULT_CONSISTENCY = 0.5


class VideoError(ImageError):
    """A clip that cannot be read or written (message is one line)."""


# -- reading ------------------------------------------------------------------------------------------

def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def wants_video(content: str | Path, output: str | Path) -> bool:
    """Whether a request is for video: a clip as content, a folder holding clips, or a clip as output."""
    content = Path(content)
    if content.is_dir():
        return is_video(output) or any(is_video(path) for path in content.iterdir())
    return is_video(content) or is_video(output)


def first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def open_clip(path: str | Path) -> av.container.InputContainer:
    """An input container whose first video stream can be decoded, or ``VideoError`` saying why not."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"video is empty (0 bytes): {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"cannot read video {path}: {first_line(error)}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"no video stream in {path} (only {describe_streams(container)})")
    stream = container.streams.video[0]
    pixels = stream.codec_context.width * stream.codec_context.height
    if pixels > MAX_FRAME_PIXELS:
        container.close()
        raise VideoError(f"video frames too large: {path} is {stream.codec_context.width}x"
                         f"{stream.codec_context.height} (at most {MAX_FRAME_PIXELS} pixels); downscale it first")
    stream.thread_type = "AUTO"  # frame-parallel decoding: the decoder keeps up with the model
    return container


def describe_streams(container) -> str:
    kinds = [stream.type for stream in container.streams]
    return ", ".join(kinds) + " streams" if kinds else "no streams"


def frame_rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else Fraction(DEFAULT_FRAME_RATE)


def decoded_frames(container, path: Path, audio_sink: Callable | None = None) -> Iterator[np.ndarray]:
    """The clip's frames as ``HxWx3`` uint8 RGB, one at a time; its audio packets go to ``audio_sink`` as they
    come (``None``: dropped). A decoding error part-way, or fewer frames than the file declares, is a
    ``VideoError``: the clip is damaged or truncated."""
    video = container.streams.video[0]
    audio = container.streams.audio[:1] if audio_sink else []
    count = 0
    try:
        for packet in container.demux(video, *audio):
            if packet.stream.type == "audio":
                if packet.dts is not None:  # the demuxer's final empty packet
                    audio_sink(packet)
                continue
            for frame in packet.decode():
                count += 1
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as error:
        raise VideoError(f"video {path} is damaged at frame {count + 1}: {first_line(error)}") from None
    if count == 0:
        raise VideoError(f"video has no frames: {path}")
    if video.frames and count < video.frames:
        raise VideoError(f"video {path} is truncated: {count} of its {video.frames} frames could be decoded")


def folder_frames(folder: Path) -> Iterator[np.ndarray]:
    """The images of a folder, in name order, as frames (``HxWx3`` uint8); all take the first one's size."""
    size = None
    for path in list_images(folder):
        image = open_image(path)
        size = size or image.size
        yield np.array(image if image.size == size else image.resize(size, Image.Resampling.BILINEAR))


# -- sizes ----------------------------------------------------------------------------------------------

def output_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """(width, height) of the stylised clip: the frame's, its longer side at most ``max_size`` (never upscaled),
    each side even (what yuv420p encoders need)."""
    if max_size and max(width, height) > max_size:
        scale = max_size / max(width, height)
        width, height = round(width * scale), round(height * scale)
    width, height = max(MIN_SIDE, width - width % 2), max(MIN_SIDE, height - height % 2)
    return width, height


def to_tensor(frame: np.ndarray) -> torch.Tensor:
    """``HxWx3`` uint8 -> ``1x3xHxW`` float in [0, 1]."""
    return torch.from_numpy(frame).permute(2, 0, 1)[None].float().div_(255)


def to_frame(image: torch.Tensor) -> np.ndarray:
    """``1x3xHxW`` float in [0, 1] -> ``HxWx3`` float32 (kept in float until encoding: blends stay exact)."""
    return image[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def padded_styler(styler: Callable, multiple: int) -> Callable:
    """``styler`` for frames of any size: padded (reflected) to a multiple of ``multiple`` for the network's
    strided layers, cropped back after; the clip keeps its exact size."""
    def run(image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), mode="reflect")
        return styler(image)[..., :height, :width]
    return run


# -- stylising ------------------------------------------------------------------------------------------

def frame_styler(stylizer: Stylizer, styles: list[torch.Tensor], mode: str, first_frame: torch.Tensor,
                 alpha: float = 1.0, weights: list[float] | None = None) -> Callable:
    """A function ``1x3xHxW frame -> stylised frame`` with the paintings summarised once for the clip, the
    model's colour card applied to every frame. The photo's own code (``alpha`` < 1) is read from
    ``first_frame``: one style for the whole clip, whatever each frame's colours."""
    if mode == "stylize":
        if len(styles) != 1:
            raise StylizeError(f"a clip takes one style in mode=stylize (got {len(styles)}); mode=mix blends several")
        style = styles[0]
        model = stylizer.styler(style, alpha, first_frame)
        shift = [style, first_frame], [alpha, 1 - alpha]
    elif mode == "mix":
        weights = [1.0] * len(styles) if weights is None else list(weights)
        if len(weights) != len(styles) or sum(weights) <= 0:
            raise StylizeError(f"mix: got {len(weights)} weight(s) for {len(styles)} style(s); weights must sum > 0")
        model = mix_styler(stylizer, styles, weights)
        shift = styles, weights
    else:
        raise StylizeError(f"mode={mode} does not apply to video: mode=stylize or mode=mix")
    return padded_styler(lambda frame: stylizer.shift_colour(model(frame), *shift), stylizer.multiple)


def mix_styler(stylizer: Stylizer, styles: list[torch.Tensor], weights: list[float]) -> Callable:
    if isinstance(stylizer, VariationalStylizer) and not stylizer.refine_steps:
        codes = torch.cat([stylizer.style_code(stylizer.style_input(style)) for style in styles])
        weight = torch.as_tensor(weights, dtype=codes.dtype, device=codes.device)[:, None]
        code = (weight * codes).sum(0, keepdim=True) / weight.sum()
        return lambda frame: stylizer.decode(frame, code)
    # refined codes are kept by the stylizer once computed; other kinds refuse mix with their own message
    return lambda frame: stylizer.mix(frame, styles, weights)


class TemporalBlend:
    """Each output blended with the previous output warped along the optical flow of the input frames:
    ``out_t = s_t + consistency * m_t * (warp(out_t-1) - s_t)``, with ``s_t`` the frame stylised on its own and
    ``m_t`` the (softened) occlusion mask. Recursive, so the history is an exponential average along the
    motion: flicker that changes from frame to frame averages out, the strokes that move with the scene stay."""

    def __init__(self, consistency: float = DEFAULT_CONSISTENCY):
        if not 0 <= consistency < 1:
            raise StylizeError(f"consistency is the weight of the previous frame, 0 (off) to below 1, got {consistency}")
        self.consistency = float(consistency)
        self.flow = FlowEstimator() if self.consistency else None
        self.previous_grey: np.ndarray | None = None
        self.previous_output: np.ndarray | None = None

    def __call__(self, frame: np.ndarray, stylised: np.ndarray) -> np.ndarray:
        """``frame`` the input (``HxWx3`` uint8), ``stylised`` its stylisation (``HxWx3`` float) -> the output."""
        if not self.consistency:
            return stylised
        current = grey(frame)
        if self.previous_output is not None:
            weight = self.history_weight(current)
            if weight is not None:
                warped = warp(self.previous_output, self.to_previous)
                stylised = stylised + weight[..., None] * (warped - stylised)
        self.previous_grey, self.previous_output = current, stylised
        return stylised

    def history_weight(self, current: np.ndarray) -> np.ndarray | None:
        """Per pixel, how much of the warped previous output to keep; None after a scene cut."""
        self.to_previous = self.flow(current, self.previous_grey)
        tracked = occlusion_free(self.to_previous, self.flow(self.previous_grey, current))
        if tracked.mean() < MIN_TRACKED:
            return None
        mask = cv2.GaussianBlur(tracked.astype(np.float32), (MASK_BLUR, MASK_BLUR), 0) * tracked
        return self.consistency * mask


def stylize_frames(frames: Iterable[np.ndarray], styler: Callable, consistency: float = DEFAULT_CONSISTENCY,
                   size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Stylised frames (``HxWx3`` uint8) of ``frames`` (``HxWx3`` uint8), one at a time. ``styler``: a
    ``1x3xHxW -> 1x3xHxW`` function (``frame_styler``); ``size``: (width, height) the frames are resized to
    first (None: as they come)."""
    blend = TemporalBlend(consistency)
    for frame in frames:
        if size is not None and (frame.shape[1], frame.shape[0]) != size:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        output = blend(frame, to_frame(styler(to_tensor(frame))))
        yield (output * 255 + 0.5).clip(0, 255).astype(np.uint8)


# -- writing --------------------------------------------------------------------------------------------

def copy_stream(container, template):
    """An output stream with ``template``'s codec parameters, for packets copied unchanged."""
    add = getattr(container, "add_stream_from_template", None)  # PyAV 13+; PyAV 12 takes template=
    return add(template) if add else container.add_stream(template=template)


def partial_path(path: Path) -> Path:
    """Where a clip is written until it is complete: hidden, in the same folder (the rename is atomic), with the
    same suffix (FFmpeg picks the container by it)."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


class ClipWriter:
    """Encodes frames into ``path`` (the container by its suffix), copying one audio stream's packets.
    ``open`` at the first frame, ``close`` when all are in: only then does ``path`` appear; ``discard`` (or an
    error inside ``with``) removes the partial file."""

    def __init__(self, path: Path, rate: Fraction, audio_template=None):
        self.path, self.rate, self.audio_template = Path(path), rate, audio_template
        self.partial = partial_path(self.path)
        self.container = self.video = self.audio = None
        self.frames = 0
        self.pending_audio: list = []  # audio that arrives before the first frame opens the file

    def open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        codec, pixel_format, options = ENCODERS.get(self.path.suffix.lower(), DEFAULT_ENCODER)
        try:
            self.container = av.open(str(self.partial), "w")
            self.video = self.container.add_stream(codec, rate=self.rate, options=dict(options))
            self.video.width, self.video.height, self.video.pix_fmt = width, height, pixel_format
            if self.audio_template is not None and self.path.suffix.lower() != ".gif":
                self.audio = copy_stream(self.container, self.audio_template)
            self.container.start_encoding()  # the header now: a container that refuses a codec says so here
        except (av.error.FFmpegError, OSError, ValueError) as error:
            self.discard()
            audio_codec = self.audio_template.codec_context.name if self.audio_template is not None else None
            if audio_codec and audio_codec in str(error):
                raise VideoError(f"cannot copy the clip's {audio_codec} audio into "
                                 f"{self.path}: choose another container (.mkv takes any)") from None
            raise VideoError(f"cannot write {self.path}: {first_line(error)}") from None

    def write(self, frame: np.ndarray) -> None:
        if self.container is None:
            self.open(frame.shape[1], frame.shape[0])
            for packet in self.pending_audio:
                self.copy_audio(packet)
            self.pending_audio.clear()
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = self.frames
        self.frames += 1
        self.mux(self.video.encode(video_frame))

    def copy_audio(self, packet) -> None:
        if self.container is None:
            self.pending_audio.append(packet)
        elif self.audio is not None:
            packet.stream = self.audio
            self.mux(packet)

    def mux(self, packets) -> None:
        try:
            self.container.mux(packets)
        except (av.error.FFmpegError, OSError, ValueError) as error:
            raise VideoError(f"cannot write {self.path}: {first_line(error)}") from None

    def close(self) -> Path:
        self.mux(self.video.encode(None))  # the encoder's delayed frames
        self.container.close()
        self.container = None
        os.replace(self.partial, self.path)
        return self.path

    def discard(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except (av.error.FFmpegError, OSError, ValueError):
                pass  # the file goes anyway
            self.container = None
        self.partial.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None or self.container is not None:
            self.discard()


# -- files in, files out (what infer.py calls) --------------------------------------------------------------

@dataclass
class VideoWritten:
    """What ``run_video`` wrote, for the one-line summary."""
    clips: list[Path] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        where = (self.clips[0] if len(self.clips) == 1 else f"{self.clips[0].parent}/") if self.clips else ""
        rate = self.frames / self.seconds if self.seconds else 0.0
        failed = f"; {len(self.failed)} failed: {'; '.join(self.failed)}" if self.failed else ""
        return (f"video: wrote {len(self.clips)} clip(s), {self.frames} frames to {where} in {self.seconds:.1f} s "
                f"({rate:.1f} frames/s){failed}")


def clip_sources(content: Path) -> list[Path]:
    """The clips of a request: a clip file, a folder of frames (one clip), or the clips of a folder."""
    if content.is_dir():
        clips = sorted(path for path in content.iterdir() if is_video(path))
        if clips:
            return clips
        if any(path.suffix.lower() in IMAGE_SUFFIXES for path in content.iterdir()):
            return [content]
        raise VideoError(f"no clips ({', '.join(VIDEO_SUFFIXES)}) or frames in folder {content}")
    if not content.exists():
        raise VideoError(f"video not found: {content}")
    return [content]


def stylize_clip(source: Path, output: Path, make_styler: Callable, consistency: float = DEFAULT_CONSISTENCY,
                 max_size: int | None = 512, fps: float | None = None, progress: bool = True) -> int:
    """One clip (a file, or a folder of frames) stylised into ``output``; returns the number of frames.
    ``make_styler(first frame as 1x3xHxW)`` builds the frame styler once the first frame is known."""
    container = None if source.is_dir() else open_clip(source)
    try:
        if container is None:
            frames, rate, audio, total = folder_frames(source), Fraction(fps or DEFAULT_FRAME_RATE), None, None
        else:
            stream = container.streams.video[0]
            audio = container.streams.audio[0] if container.streams.audio else None
            rate, total = frame_rate(stream), stream.frames or None
        with ClipWriter(output, rate, audio) as writer:
            if container is not None:
                frames = decoded_frames(container, source, writer.copy_audio if audio else None)
            bar = tqdm(total=total, unit="frame", desc=source.name, disable=not progress, leave=False)
            for output_frame in sized_stylisation(frames, make_styler, consistency, max_size):
                writer.write(output_frame)
                bar.update()
            bar.close()
            if writer.frames == 0:
                raise VideoError(f"video has no frames: {source}")
            writer.close()
            return writer.frames
    finally:
        if container is not None:
            container.close()


def sized_stylisation(frames: Iterable[np.ndarray], make_styler: Callable, consistency: float,
                      max_size: int | None) -> Iterator[np.ndarray]:
    """``stylize_frames`` at the clip's output size, the styler built from the first (resized) frame."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        return
    size = output_size(first.shape[1], first.shape[0], max_size)
    resized = cv2.resize(first, size, interpolation=cv2.INTER_AREA)
    styler = make_styler(to_tensor(resized))
    yield from stylize_frames(chain_first(resized, frames), styler, consistency, size)


def chain_first(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def run_video(stylizer: Stylizer, content, styles, output, mode: str = "stylize", alpha: float = 1.0,
              weights=None, preserve_color: bool = False, max_size: int | None = 512,
              consistency: float = DEFAULT_CONSISTENCY, fps: float | None = None, progress: bool = True) -> VideoWritten:
    """Every clip of ``content`` (a clip, a folder of frames, or a folder of clips) in the style of ``styles``
    (one painting for ``mode=stylize``, several for ``mode=mix``). One clip writes exactly ``output``; a folder
    of clips writes ``<output stem>_<clip stem><output suffix>`` and goes on past clips that cannot be read."""
    if av is None or cv2 is None:
        raise VideoError('video needs PyAV and OpenCV: pip install -e ".[video]"')
    start = time.perf_counter()
    TemporalBlend(consistency)  # a bad value is refused before any work
    content, output = Path(content), Path(output)
    if not is_video(output):
        raise VideoError(f"output={output} is not a video file: {', '.join(VIDEO_SUFFIXES)}")
    sources = clip_sources(content)
    paintings = [load_image(path, max_size=max_size)[None] for style in styles for path in list_images(style)]
    written = VideoWritten()
    for source in sources:
        target = output if len(sources) == 1 else output_path(output, source.stem)
        if target.resolve() == source.resolve():
            raise VideoError(f"output={target} would overwrite the input {source}: choose another output")

        def make_styler(first_frame):
            matched = [match_color(painting, first_frame) if preserve_color else painting for painting in paintings]
            return frame_styler(stylizer, matched, mode, first_frame, alpha, weights)
        try:
            written.frames += stylize_clip(source, target, make_styler, consistency, max_size, fps, progress)
        except ImageError as error:
            if len(sources) == 1:
                raise
            written.failed.append(f"{source.name}: {error}")
            continue
        written.clips.append(target)
    if not written.clips:
        raise VideoError(f"none of the {len(sources)} clips in {content} could be stylised, e.g. {written.failed[0]}")
    written.seconds = time.perf_counter() - start
    return written
