"""Automatic segmentation: a 3D UNet over the whole image, by sliding window."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from labelloop.imaging import Volume
from labelloop.tasks import InferOutput, InferRequest, InferSpec, InferTask, config_choices

from .config import NETWORK, NetworkConfig
from .networks import load_weights, unet
from .transforms import Prepared, normalise, to_original_grid

__all__ = ["SegmentationTask", "sliding_window_logits", "PREPROCESS_KEY"]

#: Segmentation and DeepEdit share their preprocessing, so they share cached images.
PREPROCESS_KEY = "radiology:ras-3x3x4mm-window"


def sliding_window_logits(
    network: Any, inputs: Any, device: Any, *, sw_batch_size: int, config: NetworkConfig = NETWORK
) -> Any:
    """``(1, C_in, X, Y, Z)`` -> ``(1, C_out, X, Y, Z)`` float32 logits, on the CPU.

    Mixed precision on CUDA; patches of ``config.roi_size`` with ``config.overlap``.
    """
    import torch
    from monai.inferers import sliding_window_inference

    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
        logits: Any = sliding_window_inference(
            inputs.to(device),
            roi_size=config.roi_size,
            sw_batch_size=sw_batch_size,
            predictor=network,
            overlap=config.overlap,
            mode="gaussian",
        )
    return logits.float().cpu()


class SegmentationTask(InferTask):
    """Segments every label of the app in a CT, with no clicks."""

    def __init__(self, labels: Mapping[str, int], config: NetworkConfig = NETWORK) -> None:
        self.labels = dict(labels)
        self.config = config
        self.spec = InferSpec(
            type="segmentation",
            labels=self.labels,
            dimension=3,
            description="3D UNet pre-segmentation of liver, spleen, kidneys and liver lesions in CT",
            config={"sw_batch_size": config.sw_batch_size, "largest_component": False},
            needs_weights=True,
        )

    @property
    def preprocess_key(self) -> str:
        return PREPROCESS_KEY

    def load(self, weights: Path | None, device: Any) -> Any:
        if weights is None:
            raise ValueError("the segmentation model needs weights")
        return load_weights(unet(1, len(self.labels), self.config), weights, device)

    def preprocess(self, image: Volume, device: Any) -> Prepared:
        return normalise(image, device)

    def infer(self, model: Any, prepared: Any, request: InferRequest) -> InferOutput:
        options = config_choices(self.spec.config, request.params)
        started = time.perf_counter()
        logits = sliding_window_logits(
            model,
            prepared.tensor[None],
            request.device,
            sw_batch_size=request.sw_batch_size or int(options["sw_batch_size"]),
            config=self.config,
        )
        label = logits[0].argmax(dim=0).numpy().astype(np.uint8)
        infer_s = time.perf_counter() - started
        started = time.perf_counter()
        if options["largest_component"]:
            label = keep_largest_components(label)
        post_s = time.perf_counter() - started
        started = time.perf_counter()
        original = to_original_grid(label, prepared, request.image)
        invert_s = time.perf_counter() - started
        return InferOutput(
            label=original,
            result={"label_names": self.labels},
            latencies={"infer": infer_s, "invert": invert_s, "post": post_s},
        )


def keep_largest_components(label: Any) -> Any:
    """Per label value, keep only its largest 26-connected component."""
    from scipy import ndimage

    out = np.zeros_like(label)
    for value in np.unique(label):
        if value == 0:
            continue
        components, count = ndimage.label(label == value, structure=np.ones((3, 3, 3)))
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        out[components == (int(np.argmax(sizes)) + 1)] = value
    return out
