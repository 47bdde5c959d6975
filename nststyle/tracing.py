"""Whether the code is being captured into a graph: fast paths that use in-place copies or CPU-only kernels
step aside then, so that exporters and compilers see the plain operators."""
from __future__ import annotations

import torch


def capturing_graph() -> bool:
    """Whether the code runs under tracing, scripting, ``torch.export``/ONNX export or ``torch.compile``."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling() or torch.compiler.is_exporting())
