"""The web demo: a Gradio page that stylises uploaded photos on this machine.

    python infer.py mode=serve            # http://127.0.0.1:7860 (conf/infer.yaml: host, port, max_size)
    python -m nststyle.demo --port 7861   # the same page without Hydra

Upload a photo and one or more paintings (or pick an example from the embedded sample set), choose the
shipped ``variational`` model (strength, a mix of two paintings, styles sampled from its prior by seed, the
quality mode that refines each painting's code once: ``nststyle.refine``),
the shipped ``inverse`` network, or optimisation with a loss of the zoo, and download the PNG. The Video tab
stylises an uploaded clip with one painting (``nststyle.video``: the audio kept, frames kept consistent along
the optical flow) and offers the MP4 for download. The server
listens on the loopback interface only, makes no share link and sends no telemetry: nothing leaves the
machine. Bad uploads show nststyle's own one-line ``ImageError`` on the page and the server goes on.

Gradio is an optional dependency (``pip install "nststyle[demo]"``) imported by this module alone.
"""
from __future__ import annotations

import argparse
import atexit
import functools
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from torchvision.transforms.functional import to_pil_image

from .drivers import colour_matched
from .errors import StylizeError
from .features import WeightsUnavailableError
from .images import ImageError, load_image, open_image
from .loading import load_stylizer
from .losses import STYLE_LOSSES
from .optimize import resolve_device, stylize_by_optimization
from .sample_set import content_images, style_images
from .stylizers import Stylizer
from .video import DEFAULT_CONSISTENCY, run_video

# gradio reports usage and checks for updates at start-up unless told not to; set before importing it
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
GRADIO_MISSING = "the web demo needs gradio: pip install 'nststyle[demo]'"
try:
    import gradio as gr
except ImportError:
    if __name__ == "__main__":
        sys.exit(f"error: {GRADIO_MISSING}")
    raise ImportError(GRADIO_MISSING) from None

MODELS = {"variational": "Variational (fast; mixes and samples styles)",
          "inverse": "Inverse network (style swap)",
          "optimize": "Optimisation (exact; slow on a CPU)"}
LOSSES = (*STYLE_LOSSES, "bn+mmd_poly", "swap")
MAX_UPLOAD = "50mb"  # a phone photo is under 15 MB; a bigger file is refused by gradio with a message
# uploads and results in gradio's cache are deleted after an hour (checked every hour)
DELETE_CACHE = (3600, 3600)
# styles are sampled from this model's prior whichever model is chosen: it is the one with a prior
SAMPLING_MODEL = "variational"
COMPUTE_QUEUE = "stylise"
# what the handlers turn into a message on the page (the server goes on serving)
USER_ERRORS = (ImageError, StylizeError, WeightsUnavailableError, FloatingPointError)


# where and how the models run; serve() sets them from infer.py's device= / precision=
RUNTIME = {"device": None, "precision": "auto"}


# the quality mode's L-BFGS evaluations per painting (nststyle.refine: ~20 s on one CPU thread, then kept for every photo)
REFINE_STEPS = 30


@functools.lru_cache(maxsize=None)
def cached_stylizer(name: str, refine_steps: int = 0) -> Stylizer:
    """A shipped model, loaded once per server (a few seconds each) and kept for every request, with the
    paintings' refined codes when ``refine_steps``."""
    options = {"refine_steps": refine_steps} if refine_steps else {}
    return load_stylizer(name, RUNTIME["device"], RUNTIME["precision"], **options)


def shown_on_page(handler):
    """Errors a user can fix become a gr.Error: gradio shows its message and keeps serving."""
    @functools.wraps(handler)  # keeps the signature: gradio finds the gr.Progress parameter through it
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except USER_ERRORS as error:
            raise gr.Error(str(error), print_exception=False) from None
    return run


def named(error: ImageError, path: str) -> str:
    """The error's message with the file named as the user knows it, not as gradio cached it
    (in its cache folder under a hashed name)."""
    return str(error).replace(str(path), Path(path).name)


def read_upload(path: str, max_size: int | None, multiple: int = 1) -> torch.Tensor:
    """An uploaded image as ``1x3xHxW``."""
    try:
        return load_image(path, max_size=max_size, multiple=multiple)[None]
    except ImageError as error:
        raise ImageError(named(error, path)) from None


def as_picture(image: torch.Tensor):
    return to_pil_image(image[0].detach().float().clamp(0, 1).cpu())


def needs_photo(photo: str | None) -> str:
    if not photo:
        raise StylizeError("upload a photo first")
    return photo


def needs_paintings(paintings: list[str] | None) -> list[str]:
    if not paintings:
        raise StylizeError("upload one or more paintings (or sample a style from the variational model)")
    return list(paintings)


def painting_weights(count: int, mix: float) -> list[float]:
    """Two paintings: ``mix`` moves from the first (0) to the second (1); otherwise equal weights."""
    return [1 - mix, mix] if count == 2 else [1.0] * count


def variational_result(stylizer: Stylizer, content, styles, strength: float, mix: float) -> torch.Tensor:
    """The weighted mixture of the paintings' style codes, with the model's colour shift. Strength < 1 adds
    the photo's own code with weight ``1 - strength``: for one painting, what ``stylize_large(alpha=strength)``
    does."""
    weights = painting_weights(len(styles), mix)
    weights = [strength * weight / sum(weights) for weight in weights]
    result = stylizer.mix(content, styles, weights, own_weight=1 - strength)
    return stylizer.shift_colour(result, [*styles, content], [*weights, 1 - strength])


def feedforward_result(model: str, photo: str, paintings: list[str], strength: float, mix: float,
                       preserve_color: bool, max_size: int, progress, refine: bool = False) -> torch.Tensor:
    progress(0, desc=f"loading the {model} model")
    stylizer = cached_stylizer(model, REFINE_STEPS if refine and model == "variational" else 0)
    content = read_upload(photo, max_size, stylizer.multiple)
    # paintings come at the photo's scale; the model reads them at its style_size, as in infer.py
    styles = [colour_matched(read_upload(path, max_size), content, preserve_color)
              for path in paintings]
    progress(0.5, desc="stylising")
    if model == "variational":
        return variational_result(stylizer, content, styles, strength, mix)
    if len(styles) > 1:
        gr.Warning(f"the {model} model takes one painting: it used the first")
    return stylizer.stylize_large(content, styles[0], alpha=strength, tile=None)


def optimized_result(photo: str, paintings: list[str], loss: str, iterations: int, preserve_color: bool,
                     max_size: int, progress) -> torch.Tensor:
    device = resolve_device(RUNTIME["device"])
    content, style = (read_upload(path, max_size).to(device) for path in (photo, paintings[0]))
    if len(paintings) > 1:
        gr.Warning("optimisation takes one painting: it used the first")

    def report(iteration, image, values):
        progress((iteration, int(iterations)), desc=f"optimising ({loss} loss)", unit="iterations")

    image, _ = stylize_by_optimization(content, style, loss=loss, max_iter=int(iterations),
                                       preserve_color=preserve_color, progress=False, callback=report)
    return image


def summary(image: torch.Tensor, what: str, start: float) -> str:
    height, width = image.shape[-2:]
    return f"{what}: {width}×{height} px in {time.perf_counter() - start:.1f} s"


@shown_on_page
def stylize(photo: str | None, paintings: list[str] | None, model: str = "variational", loss: str = "w2",
            iterations: int = 50, strength: float = 1.0, mix: float = 0.5, preserve_color: bool = False,
            max_size: int = 512, refine: bool = False, progress=gr.Progress(track_tqdm=True)):
    """The Stylise button: (the result as a PIL image, a one-line summary)."""
    start = time.perf_counter()
    photo, paintings = needs_photo(photo), needs_paintings(paintings)
    if model == "optimize":
        result = optimized_result(photo, paintings, loss, iterations, preserve_color, max_size, progress)
        what = f"optimisation, {loss} loss, {int(iterations)} iterations at most"
    else:
        result = feedforward_result(model, photo, paintings, strength, mix, preserve_color, max_size, progress,
                                    refine)
        what = f"{model} model" + (", refined codes" if refine and model == "variational" else "")
    return as_picture(result), summary(result, what, start)


@shown_on_page
def sample_style(photo: str | None, seed: int = 0, max_size: int = 512):
    """The sample button: (the photo in a style drawn from the variational model's prior with ``seed``,
    a summary, the next seed: pressing again draws a new style, the summary names the seed to repeat it)."""
    start = time.perf_counter()
    stylizer = cached_stylizer(SAMPLING_MODEL)
    content = read_upload(needs_photo(photo), max_size, stylizer.multiple)
    seed = int(seed or 0)
    [result] = stylizer.sample(content, 1, seed=seed)
    return as_picture(result), summary(result, f"style sampled with seed {seed}", start), seed + 1


@shown_on_page
def stylize_video(clip: str | None, painting: str | None, strength: float = 1.0,
                  consistency: float = DEFAULT_CONSISTENCY, max_size: int = 512,
                  progress=gr.Progress(track_tqdm=True)):
    """The video tab's button: (the stylised clip's path, a one-line summary). The shipped variational model,
    one painting; the clip is written to a fresh temporary folder, removed when the server stops (gradio serves a
    copy from its cache)."""
    if not clip:
        raise StylizeError("upload a video clip first")
    if not painting:
        raise StylizeError("upload a painting")
    stylizer = cached_stylizer("variational")
    folder = tempfile.mkdtemp(prefix="nststyle-video-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    output = Path(folder) / f"{Path(clip).stem}_stylised.mp4"
    try:
        written = run_video(stylizer, clip, [painting], output, alpha=strength, max_size=int(max_size),
                            consistency=consistency)
    except ImageError as error:
        raise ImageError(named(error, clip)) from None
    return str(output), written.summary().replace(str(output), output.name)


def unreadable(path: str) -> str | None:
    """Why an upload is not a usable image (nststyle's own message, naming the file), or None."""
    try:
        open_image(path)
    except ImageError as error:
        return named(error, path)
    return None


def warn_unreadable(files: str | list[str] | None) -> None:
    """On upload: a warning at once for each file that stylising would refuse."""
    for path in [files] if isinstance(files, str) else files or []:
        reason = unreadable(path)
        if reason:
            gr.Warning(reason)


def preview(photo: str | None, paintings: list[str] | None) -> list[tuple[str, str]]:
    """Thumbnails of the usable uploads, captioned with their role."""
    uploads = ([(photo, "photo")] if photo else []) + [(path, f"painting {index}")
                                                       for index, path in enumerate(paintings or [], 1)]
    return [(path, role) for path, role in uploads if unreadable(path) is None]


def model_options(model: str) -> list:
    """Visibility of (loss, iterations, strength, mix, refine, seed, sample): the controls that apply to ``model``."""
    optimizing, variational = model == "optimize", model == "variational"
    shown = (optimizing, optimizing, not optimizing, variational, variational, variational, variational)
    return [gr.update(visible=visible) for visible in shown]


def example_files(folder: Path) -> list[list]:
    """Example rows (photo, [paintings]) from the embedded sample set, written to ``folder`` (about 1 s)."""
    photos = dict(content_images(count=2))
    paintings = dict(style_images(count=5)[3:])  # stained glass and swirls, as in docs/examples/
    for name, image in {**photos, **paintings}.items():
        image.save(folder / f"{name}.png")
    photo_a, photo_b = (str(folder / f"{name}.png") for name in photos)
    painting_a, painting_b = (str(folder / f"{name}.png") for name in paintings)
    return [[photo_b, [painting_a]], [photo_a, [painting_b]], [photo_b, [painting_a, painting_b]]]


def example_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="nststyle-demo-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


INTRO = """# nststyle: neural style transfer
Upload a photo and one or more paintings, or pick an example below. Everything runs on this machine:
the images go to this server only and nothing is sent anywhere else."""


def build_demo(max_size: int = 512) -> "gr.Blocks":
    """The page; ``max_size`` is the working size's default (longer side of the photo, px)."""
    with gr.Blocks(title="nststyle", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column():
                photo = gr.File(label="Photo", file_types=["image"], elem_id="photo")
                paintings = gr.File(label="Painting(s)", file_count="multiple", file_types=["image"],
                                    elem_id="paintings")
                thumbnails = gr.Gallery(label="Your images", columns=4, height=200, object_fit="contain",
                                        elem_id="thumbnails")
                model = gr.Radio([(label, name) for name, label in MODELS.items()], value="variational",
                                 label="Model")
                loss = gr.Dropdown(list(LOSSES), value="w2", label="Style loss", visible=False)
                iterations = gr.Slider(10, 1000, value=50, step=10, visible=False,
                                       label="Iterations (1-3 s each at 512 px on one CPU core)")
                strength = gr.Slider(0, 1, value=1, step=0.05, label="Strength (0: the photo's own style)")
                mix = gr.Slider(0, 1, value=0.5, step=0.05, label="Two paintings: first (0) ↔ second (1)")
                refine = gr.Checkbox(label=f"Quality mode: refine each painting's code ({REFINE_STEPS} steps, "
                                           "~20 s per new painting on one CPU core, then kept)", elem_id="refine")
                preserve_color = gr.Checkbox(label="Keep the photo's colours")
                size = gr.Slider(64, 1024, value=max_size, step=32, label="Working size (longer side, px)")
                run = gr.Button("Stylise", variant="primary", elem_id="stylise")
                with gr.Row():
                    seed = gr.Number(0, precision=0, label="Seed (same seed, same style)")
                    sample = gr.Button("Sample a new style", elem_id="sample")
            with gr.Column():
                result = gr.Image(label="Result", type="pil", format="png", interactive=False, height=480,
                                  buttons=["download", "fullscreen"], elem_id="result")
                status = gr.Markdown(elem_id="status")
                gr.Examples(example_files(example_folder()), [photo, paintings])
        video_controls(max_size)

        for upload in (photo, paintings):
            upload.upload(warn_unreadable, upload)
            upload.change(preview, [photo, paintings], thumbnails)
        model.change(model_options, model, [loss, iterations, strength, mix, refine, seed, sample])
        # one queue for both buttons: they share the CPU, and results arrive in the order they were asked for
        run.click(stylize, [photo, paintings, model, loss, iterations, strength, mix, preserve_color, size, refine],
                  [result, status], concurrency_id=COMPUTE_QUEUE)
        sample.click(sample_style, [photo, seed, size], [result, status, seed], concurrency_id=COMPUTE_QUEUE)
    return demo


def video_controls(max_size: int):
    """The video tab: a clip and a painting in, the stylised clip out (the button queues with the others)."""
    with gr.Tab("Video"):
        with gr.Row():
            with gr.Column():
                clip = gr.Video(label="Clip", sources=["upload"], elem_id="clip")
                painting = gr.File(label="Painting", file_types=["image"], elem_id="video_painting")
                strength = gr.Slider(0, 1, value=1, step=0.05, label="Strength (0: the clip's own style)")
                consistency = gr.Slider(0, 0.9, value=DEFAULT_CONSISTENCY, step=0.05,
                                        label="Consistency (0: each frame on its own, flickers)")
                size = gr.Slider(64, 1024, value=max_size, step=32, label="Working size (longer side, px)")
                run = gr.Button("Stylise the clip", variant="primary", elem_id="stylise_video")
            with gr.Column():
                result = gr.Video(label="Result", interactive=False, elem_id="video_result")
                status = gr.Markdown(elem_id="video_status")
        run.click(stylize_video, [clip, painting, strength, consistency, size], [result, status],
                  concurrency_id=COMPUTE_QUEUE)


def stop_like_ctrl_c(signum, frame):
    raise KeyboardInterrupt


def serve(host: str = "127.0.0.1", port: int = 7860, max_size: int = 512, device: str | None = None,
          precision: str = "auto") -> None:
    """Serve the page until interrupted (Ctrl-C); one stylisation runs at a time (they share the CPU).
    ``device`` (None: cuda when available) and ``precision`` (fp32, bf16, auto) as for ``load_stylizer``."""
    RUNTIME.update(device=device, precision=precision)
    cached_stylizer.cache_clear()
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, a container stop) ends the server as Ctrl-C does, so that the exit handlers run
        # and remove the temporary example folder
        signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    demo = build_demo(max_size).queue(default_concurrency_limit=1)
    # quiet: gradio's own start-up lines suggest share=True (a public link), which this offline demo never makes
    try:
        _, local_url, _ = demo.launch(server_name=host, server_port=port, share=False, ssr_mode=False,
                                      max_file_size=MAX_UPLOAD, footer_links=["api", "settings"], quiet=True,
                                      prevent_thread_lock=True)
        print(f"nststyle demo: {local_url} (Ctrl-C stops it)", flush=True)
        demo.block_thread()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while gradio still starts up: stop as quietly as afterwards
        demo.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nststyle.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-size", type=int, default=512, help="default working size (longer side, px)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"])
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    serve(args.host, args.port, args.max_size, args.device, args.precision)


if __name__ == "__main__":
    main()
