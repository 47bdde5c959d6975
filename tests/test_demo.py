"""The web demo (nststyle.demo): its handlers called directly, then the page served by a real server and
driven in a real headless Chromium (Debian's, through playwright).

    NSTSTYLE_DEMO_SCREENSHOT=docs/figures/demo.png python -m pytest -q tests/test_demo.py

also saves the page with a result; NSTSTYLE_DEMO_PHOTO / NSTSTYLE_DEMO_PAINTING then pick its inputs
(the test's own generated images otherwise).
"""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nststyle.images import load_image
from test_bad_inputs import assert_one_line_error, png_header_only

gr = pytest.importorskip("gradio", reason="the web demo needs gradio: pip install -e '.[demo]'")
import nststyle.stylizers.variational  # noqa: E402
from nststyle import demo  # noqa: E402  (after the skip: it needs gradio)

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# a closed network: no first-run, update, sync or QUIC traffic from the browser itself
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_SECONDS = 90
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no {CHROMIUM}: apt-get install chromium")


def gradient_photo(path: Path, width: int = 192, height: int = 144) -> Path:
    """A colour gradient with a checkerboard: structure for the decoder to keep, colour to restyle."""
    y, x = np.mgrid[0:height, 0:width]
    checker = ((x // 24 + y // 24) % 2) * 255
    Image.fromarray(np.stack([x / width * 255, y / height * 255, checker], -1).astype("uint8")).save(path)
    return path


def block_painting(path: Path, seed: int = 0, size: int = 96) -> Path:
    """Large blocks of random saturated colour."""
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST).save(path)
    return path


def bad_upload(case: str, folder: Path) -> Path:
    """A file that looks like an image upload but that stylising must refuse."""
    path = folder / f"{case}.png"
    if case == "not_an_image":
        path.write_text("a shopping list, not a picture")
    elif case == "tiny":
        Image.new("RGB", (8, 8), "red").save(path)
    else:  # huge: a PNG that claims 20000 x 20000 pixels
        png_header_only(path, 20000, 20000)
    return path


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255


def expected_size(photo: Path, max_size: int, model: str = "variational") -> tuple[int, int]:
    """(width, height) of the result: the photo as the library loads it for ``model``."""
    multiple = 1 if model == "optimize" else demo.cached_stylizer(model).multiple
    height, width = load_image(photo, max_size=max_size, multiple=multiple).shape[-2:]
    return width, height


def assert_stylised(result: Image.Image, photo: Path, max_size: int, model: str = "variational") -> None:
    """The photo's (working) size and aspect, and visibly other pixels."""
    assert result.size == expected_size(photo, max_size, model)
    with Image.open(photo) as original:
        assert abs(result.width / result.height - original.width / original.height) < 0.1
        difference = np.abs(pixels(result) - pixels(original.resize(result.size))).mean()
    assert difference > 0.05, f"the result is almost the photo (mean abs difference {difference:.3f})"


@pytest.fixture
def inputs(tmp_path):
    return gradient_photo(tmp_path / "photo.png"), block_painting(tmp_path / "painting.png")


# -- the handlers, without a browser ------------------------------------------------------------------

@pytest.mark.parametrize("case, phrase", [("not_an_image", "cannot read image not_an_image.png"),
                                          ("tiny", "image too small: tiny.png"),
                                          ("huge", "image too large: huge.png")])
@pytest.mark.parametrize("role", ["photo", "painting"])
def test_a_bad_upload_is_a_readable_error(case, phrase, role, inputs, tmp_path):
    photo, painting = inputs
    bad = bad_upload(case, tmp_path)
    photo, painting = (bad, painting) if role == "photo" else (photo, bad)
    with pytest.raises(gr.Error) as error:
        demo.stylize(str(photo), [str(painting)], max_size=64)
    assert phrase in error.value.message
    assert str(tmp_path) not in error.value.message  # named as uploaded, not by gradio's cache path
    assert phrase in demo.unreadable(str(bad))
    thumbnails = [caption for _, caption in demo.preview(str(photo), [str(painting)])]
    assert thumbnails == (["painting 1"] if role == "photo" else ["photo"])


def test_missing_uploads_say_what_to_do(inputs):
    photo, _ = inputs
    with pytest.raises(gr.Error, match="upload a photo"):
        demo.stylize(None, None)
    with pytest.raises(gr.Error, match="upload one or more paintings"):
        demo.stylize(str(photo), [])


@pytest.mark.parametrize("model, options", [("variational", {}), ("inverse", {}),
                                            ("optimize", dict(loss="swap", iterations=5))])
def test_every_model_stylises_at_the_working_size(model, options, inputs):
    photo, painting = inputs
    result, summary = demo.stylize(str(photo), [str(painting)], model=model, max_size=64, **options)
    assert_stylised(result, photo, 64, model)
    assert f"{result.width}×{result.height} px" in summary


def test_mix_and_strength_are_the_library_operations(inputs, tmp_path):
    photo, painting = inputs
    second = block_painting(tmp_path / "second.png", seed=1)
    first_alone, _ = demo.stylize(str(photo), [str(painting)], max_size=64)
    mixed_at_zero, _ = demo.stylize(str(photo), [str(painting), str(second)], mix=0.0, max_size=64)
    mixed_halfway, _ = demo.stylize(str(photo), [str(painting), str(second)], mix=0.5, max_size=64)
    assert np.array_equal(pixels(mixed_at_zero), pixels(first_alone))
    assert np.abs(pixels(mixed_halfway) - pixels(first_alone)).mean() > 0.01

    stylizer = demo.cached_stylizer("variational")
    content = load_image(photo, 64, stylizer.multiple)[None]
    style = load_image(painting)[None]  # the model reads it at its style_size
    expected = stylizer.stylize_large(content, style, alpha=0.4, tile=None)  # with the model's colour shift
    assert torch.allclose(demo.variational_result(stylizer, content, [style], 0.4, 0.5), expected, atol=1e-4)


def test_the_quality_mode_refines_each_painting_once_and_never_the_photo(inputs, monkeypatch):
    photo, painting = inputs
    monkeypatch.setattr(demo, "REFINE_STEPS", 2)
    refined = []
    original = nststyle.stylizers.variational.refine_style_code
    monkeypatch.setattr(nststyle.stylizers.variational, "refine_style_code",
                        lambda *args, **kwargs: refined.append(1) or original(*args, **kwargs))
    plain, _ = demo.stylize(str(photo), [str(painting)], max_size=64, strength=0.6)
    first, summary = demo.stylize(str(photo), [str(painting)], max_size=64, strength=0.6, refine=True)
    again, _ = demo.stylize(str(photo), [str(painting)], max_size=64, strength=0.6, refine=True)
    assert "refined codes" in summary and len(refined) == 1  # the painting once; the photo's own code never
    assert np.array_equal(pixels(first), pixels(again))
    assert np.abs(pixels(first) - pixels(plain)).mean() > 1e-3  # the refined code paints differently
    assert first.size == plain.size


def test_a_seed_names_a_style(inputs):
    photo, _ = inputs
    first, summary, next_seed = demo.sample_style(str(photo), 3, max_size=64)
    again, _, _ = demo.sample_style(str(photo), 3, max_size=64)
    other, _, _ = demo.sample_style(str(photo), next_seed, max_size=64)
    assert "seed 3" in summary and next_seed == 4
    assert np.array_equal(pixels(first), pixels(again))
    assert np.abs(pixels(first) - pixels(other)).mean() > 0.01


# -- the entry points -----------------------------------------------------------------------------------

def test_python_m_nststyle_demo_passes_its_options_to_serve(monkeypatch):
    served = []
    monkeypatch.setattr(demo, "serve", lambda *args: served.append(args))
    demo.main(["--port", "7999", "--max-size", "256"])
    demo.main(["--port", "7999", "--device", "cpu", "--precision", "bf16"])
    assert served == [("127.0.0.1", 7999, 256, None, "auto"),  # loopback unless told otherwise
                      ("127.0.0.1", 7999, 512, "cpu", "bf16")]


# each entry point, run as python would run it from the command line
ENTRY_POINTS = {"python -m nststyle.demo": "runpy.run_module('nststyle.demo', run_name='__main__')",
                "infer.py mode=serve": "sys.argv = ['infer.py', 'mode=serve']; "
                                       "runpy.run_path('infer.py', run_name='__main__')"}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_without_gradio_one_line_says_how_to_install_it(entry):
    hide_gradio = "import runpy, sys; sys.modules['gradio'] = None; "  # makes `import gradio` fail
    result = subprocess.run([sys.executable, "-c", hide_gradio + ENTRY_POINTS[entry]], cwd=ROOT, capture_output=True,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert_one_line_error(result, "pip install 'nststyle[demo]'")


# -- the page in a browser ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_served(url: str, server: subprocess.Popen, log: Path) -> None:
    """Until the page answers and the server has printed its start-up line (which it does once gradio's
    launch returns, a moment after the page first answers: a user acts on the line)."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the demo server exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                if "nststyle demo: " in log.read_text():
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the demo server did not answer in {SERVER_START_SECONDS} s:\n{log.read_text()}")


def screenshot_path() -> Path | None:
    path = os.environ.get("NSTSTYLE_DEMO_SCREENSHOT")
    return ROOT / path if path else None


# the working size of the served page: small for speed, larger for the screenshot's sake
PAGE_SIZE = 448 if screenshot_path() else 128


def start_server(folder: Path, **env) -> tuple[subprocess.Popen, str]:
    """``python infer.py mode=serve`` on a free loopback port, one thread, its output in ``folder``;
    (the process, its URL) once it answers."""
    port, log = free_port(), folder / "server.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1", **env)
    command = [sys.executable, "infer.py", "mode=serve", f"port={port}", f"max_size={PAGE_SIZE}", "threads=1"]
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_served(url, process, log)
    except BaseException:
        process.kill()
        raise
    return process, url


def test_sigterm_stops_the_server_and_removes_its_temporary_files(tmp_path):
    process, _ = start_server(tmp_path, TMPDIR=str(tmp_path))
    assert list(tmp_path.glob("nststyle-demo-*/*.png"))  # the examples' images
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert not list(tmp_path.glob("nststyle-demo-*")), (tmp_path / "server.log").read_text()
    log = (tmp_path / "server.log").read_text()
    assert "nststyle demo: http://127.0.0.1:" in log and "share=True" not in log  # no public-link hint offline


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo server for the browser tests; its URL."""
    process, url = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield url
    finally:
        process.send_signal(signal.SIGINT)  # gradio closes cleanly on Ctrl-C
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download: "
                                                                 "it drives /usr/bin/chromium)")
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def requested():
    """Every URL the page requests."""
    return []


@pytest.fixture
def page(browser, server, requested):
    """A fresh page on the demo."""
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server)
    yield page
    context.close()


def upload(page, component: str, *files: Path) -> None:
    """Replace the files of an upload component and wait until they arrived."""
    clear = page.locator(f"#{component} button[aria-label=Clear]")
    if clear.count():  # a file component holding a file shows it instead of its file input
        clear.click()
    page.locator(f"#{component} input[type=file]").set_input_files([str(file) for file in files])
    for file in files:  # listed by name once uploaded (its text is split into stem and extension)
        page.locator(f"#{component} [aria-label='{file.name}']").wait_for()


def stylise(page, photo: Path, max_size: int) -> Image.Image:
    """Press Stylise, wait for the result of ``photo``'s size and download it."""
    page.locator("#stylise").click()
    width, height = expected_size(photo, max_size)
    page.locator("#status", has_text=f"{width}×{height} px").wait_for()
    with page.expect_download() as download:
        page.locator("#result a[download]").click()
    path = download.value.path()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.convert("RGB")


def assert_stayed_on_this_machine(requested: list[str], server: str) -> None:
    elsewhere = [url for url in requested if not url.startswith((server, "data:", "blob:"))]
    assert not elsewhere, f"the page requested {elsewhere}"


@needs_chromium
def test_the_page_stylises_an_upload(page, server, requested, inputs):
    photo = Path(os.environ.get("NSTSTYLE_DEMO_PHOTO", inputs[0]))
    painting = Path(os.environ.get("NSTSTYLE_DEMO_PAINTING", inputs[1]))
    upload(page, "photo", photo)
    upload(page, "paintings", painting)
    result = stylise(page, photo, PAGE_SIZE)
    assert_stylised(result, photo, PAGE_SIZE)
    assert_stayed_on_this_machine(requested, server)
    if screenshot_path():
        page.screenshot(path=str(screenshot_path()), full_page=True)


@needs_chromium
def test_a_bad_upload_shows_a_message_and_the_server_goes_on(page, server, requested, inputs, tmp_path):
    photo, painting = inputs
    upload(page, "photo", bad_upload("not_an_image", tmp_path))
    upload(page, "paintings", painting)
    page.locator("[data-testid=toast-body].warning", has_text="cannot read image not_an_image.png").wait_for()
    page.locator("#stylise").click()
    page.locator("[data-testid=toast-body].error", has_text="cannot read image not_an_image.png").wait_for()

    portrait = gradient_photo(tmp_path / "portrait.png", width=144, height=192)
    upload(page, "photo", portrait)
    assert_stylised(stylise(page, portrait, PAGE_SIZE), portrait, PAGE_SIZE)
    assert_stayed_on_this_machine(requested, server)
