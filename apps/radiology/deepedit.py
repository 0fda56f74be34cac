"""DeepEdit: a 3D UNet that takes the image plus one guidance channel per label built from clicks."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from labelloop.imaging import Volume
from labelloop.tasks import InferOutput, InferRequest, InferSpec, InferTask, Points, config_choices

from .config import NETWORK, NetworkConfig
from .guidance import clicks_by_label, guidance_channels
from .networks import load_weights, unet
from .segmentation import PREPROCESS_KEY, sliding_window_logits
from .transforms import Prepared, normalise, to_original_grid

__all__ = ["DeepEditTask", "apply_clicks"]


def apply_clicks(label: Any, clicks: Mapping[str, Points], labels: Mapping[str, int]) -> Any:
    """Clicked voxels carry the label they were clicked for: a click is a constraint, not a hint."""
    for name, points in clicks.items():
        if len(points):
            label[points[:, 0], points[:, 1], points[:, 2]] = labels[name]
    return label


class DeepEditTask(InferTask):
    """Interactive multi-label segmentation; with no clicks it segments automatically."""

    def __init__(self, labels: Mapping[str, int], config: NetworkConfig = NETWORK) -> None:
        self.labels = dict(labels)
        self.config = config
        self.spec = InferSpec(
            type="deepedit",
            labels=self.labels,
            dimension=3,
            description="DeepEdit: 3D UNet guided by foreground and background clicks per label",
            config={"sw_batch_size": config.sw_batch_size},
            needs_weights=True,
        )

    @property
    def preprocess_key(self) -> str:
        return PREPROCESS_KEY

    def load(self, weights: Path | None, device: Any) -> Any:
        if weights is None:
            raise ValueError("the deepedit model needs weights")
        return load_weights(unet(1 + len(self.labels), len(self.labels), self.config), weights, device)

    def preprocess(self, image: Volume, device: Any) -> Prepared:
        return normalise(image, device)

    def infer(self, model: Any, prepared: Any, request: InferRequest) -> InferOutput:
        import torch

        options = config_choices(self.spec.config, request.params)
        image = request.image
        clicks = clicks_by_label(request.params, self.labels, image.geometry.shape)
        started = time.perf_counter()
        guidance = guidance_channels(
            clicks, self.labels, image.geometry.affine, prepared.affine, prepared.shape
        )
        inputs = torch.cat([prepared.tensor.cpu(), torch.from_numpy(guidance)], dim=0)[None]
        logits = sliding_window_logits(
            model,
            inputs,
            request.device,
            sw_batch_size=request.sw_batch_size or int(options["sw_batch_size"]),
            config=self.config,
        )
        label = logits[0].argmax(dim=0).numpy().astype(np.uint8)
        infer_s = time.perf_counter() - started
        started = time.perf_counter()
        original = to_original_grid(label, prepared, image)
        invert_s = time.perf_counter() - started
        started = time.perf_counter()
        original = apply_clicks(original, clicks, self.labels)
        post_s = time.perf_counter() - started
        return InferOutput(
            label=original,
            result={"label_names": self.labels, "clicks": {k: len(v) for k, v in clicks.items() if len(v)}},
            latencies={"infer": infer_s, "invert": invert_s, "post": post_s},
        )
