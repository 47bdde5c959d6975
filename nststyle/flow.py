"""Optical flow between video frames and the warps and occlusion masks built on it.

Flows are ``HxWx2`` float32 arrays in pixels, OpenCV's convention: ``flow[y, x] = (dx, dy)`` says that pixel
``(x, y)`` of the frame the flow starts from is found at ``(x + dx, y + dy)`` in the frame it points to. So
``warp(previous, flow_to_previous)`` moves the previous frame onto the current one.

DIS (Kroeger et al. 2016, ``cv2.DISOpticalFlow_create``) needs no weights and runs in milliseconds at 384 px
on a CPU; the occlusion mask is the forward-backward check of Sundaram et al. 2010 as Ruder et al. 2016 use it
for video style transfer.
"""
from __future__ import annotations

import numpy as np

try:  # optional (pip install "nststyle[video]"); nststyle.video says so when it is missing
    import cv2
except ImportError:
    cv2 = None

# the forward-backward check passes a pixel when |f + b|^2 <= RELATIVE * (|f|^2 + |b|^2) + ABSOLUTE
# (Ruder et al.): a flow that goes there and back again lands near where it started
CONSISTENCY_RELATIVE = 0.01
CONSISTENCY_ABSOLUTE = 0.5


def grey(frame: np.ndarray) -> np.ndarray:
    """``HxWx3`` uint8 RGB -> ``HxW`` uint8 luminance, what DIS reads."""
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


class FlowEstimator:
    """DIS optical flow between greyscale frames; one instance keeps its buffers between calls."""

    def __init__(self, preset: str = "MEDIUM"):
        """``preset``: ULTRAFAST, FAST or MEDIUM (OpenCV's DIS presets)."""
        self.dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset}"))

    def __call__(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The flow from ``source`` to ``target`` (both ``HxW`` uint8)."""
        return self.dis.calc(source, target, None)


def sampling_grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap``'s maps: where each pixel reads from."""
    height, width = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` (``HxW`` or ``HxWxC``, any float or uint8 dtype) read at ``pixel + flow`` (bilinear; outside
    the frame: the nearest edge pixel, which ``inside_frame`` masks out)."""
    map_x, map_y = sampling_grid(flow)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def inside_frame(flow: np.ndarray) -> np.ndarray:
    """``HxW`` bool: the pixels whose flow lands inside the frame (the rest come into view: no history)."""
    height, width = flow.shape[:2]
    map_x, map_y = sampling_grid(flow)
    return (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)


def occlusion_free(flow: np.ndarray, flow_back: np.ndarray) -> np.ndarray:
    """``HxW`` bool: the pixels where ``flow`` (this frame -> the other) and ``flow_back`` (the other -> this)
    agree and that stay in the frame. Elsewhere the pixel was hidden in the other frame (occluded, or it came in
    over the border) or the flow is unreliable: there its history must not be used."""
    returned = warp(flow_back, flow)
    round_trip = np.square(flow + returned).sum(-1)
    scale = np.square(flow).sum(-1) + np.square(returned).sum(-1)
    return (round_trip <= CONSISTENCY_RELATIVE * scale + CONSISTENCY_ABSOLUTE) & inside_frame(flow)


def masked_squared_error(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """The mean squared difference over the ``mask`` pixels (all channels), images in [0, 1]; nan without any."""
    if not mask.any():
        return float("nan")
    difference = np.square(image.astype(np.float32) - reference.astype(np.float32))
    return float(difference[mask].mean())


def temporal_error(previous: np.ndarray, current: np.ndarray, flow_to_previous: np.ndarray,
                   mask: np.ndarray) -> float:
    """How much ``current`` differs from ``previous`` moved onto it along ``flow_to_previous`` (``HxWx3`` images
    in [0, 1]; the mean squared difference over ``mask``). With the scene's exact motion this is the temporal gap
    of a synthetic clip; with the flow of the input frames and its occlusion mask it is Lai et al.'s warping
    error (ECCV 2018) of one frame pair."""
    return masked_squared_error(current, warp(previous, flow_to_previous), mask)


def input_motion(frames: list[np.ndarray], estimator: FlowEstimator | None = None
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each frame after the first: (flow to the previous frame, occlusion-free mask), from the frames
    themselves (``HxWx3`` uint8): what the warping error of any stylisation of them is measured along."""
    estimator = estimator or FlowEstimator()
    greys = [grey(frame) for frame in frames]
    motion = []
    for previous, current in zip(greys, greys[1:]):
        to_previous = estimator(current, previous)
        motion.append((to_previous, occlusion_free(to_previous, estimator(previous, current))))
    return motion


def mean_temporal_error(outputs: list[np.ndarray], motion: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """``temporal_error`` averaged over the frame pairs of a clip (``outputs`` in [0, 1], ``motion`` one entry
    per pair as ``input_motion`` gives)."""
    errors = [temporal_error(previous, current, flow, mask)
              for previous, current, (flow, mask) in zip(outputs, outputs[1:], motion)]
    return float(np.nanmean(errors))
