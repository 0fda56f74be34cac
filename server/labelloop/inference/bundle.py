"""A MONAI bundle served as an inference task.

A bundle folder holds ``configs/inference.json`` (``network_def``, ``preprocessing``,
``inferer``, optionally ``postprocessing``), ``models/model.pt`` (a state dict) or
``models/model.ts`` (TorchScript), and optionally ``configs/metadata.json`` whose
``network_data_format.outputs.pred.channel_def`` names the output channels.

The image never goes through the bundle's ``LoadImage(d)``: the server hands it over as a
``MetaTensor`` with the same array and affine that ``LoadImage`` would produce, and file
writers (``SaveImage(d)``) are dropped from the pipelines.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from labelloop.errors import LabelloopError
from labelloop.imaging import Volume, resample_nearest
from labelloop.tasks import InferOutput, InferRequest, InferSpec, InferTask

__all__ = ["BundleTask", "BundleError"]

logger = logging.getLogger(__name__)

_DROPPED = ("LoadImage", "LoadImaged", "SaveImage", "SaveImaged")


class BundleError(LabelloopError):
    """The MONAI bundle cannot be used."""


def _without_io(parser: Any, key: str) -> None:
    """Drop loaders and savers from pipeline ``key`` before it is built (the server loads and writes)."""
    if key not in parser:
        return
    config = parser[key]
    if isinstance(config, dict) and isinstance(config.get("transforms"), list):
        config["transforms"] = [
            t
            for t in config["transforms"]
            if not (isinstance(t, dict) and str(t.get("_target_", "")).rsplit(".", 1)[-1] in _DROPPED)
        ]
        parser[key] = config


class BundleTask(InferTask):
    """Serve ``folder`` (a MONAI bundle) as a ``segmentation`` model named after the folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.name = self.folder.name
        config = self.folder / "configs" / "inference.json"
        if not config.is_file():
            raise BundleError(f"{self.folder} is not a MONAI bundle: configs/inference.json is missing")
        labels = self._labels()
        self.spec = InferSpec(
            type="segmentation",
            labels=labels,
            dimension=3,
            description=self._description(),
            config={},
            needs_weights=False,
        )
        self._lock = threading.Lock()
        self._parsed: dict[str, Any] | None = None

    def _metadata(self) -> dict[str, Any]:
        path = self.folder / "configs" / "metadata.json"
        if not path.is_file():
            return {}
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleError(f"{path} cannot be read: {exc}") from exc

    def _labels(self) -> dict[str, int]:
        channels = (
            self._metadata()
            .get("network_data_format", {})
            .get("outputs", {})
            .get("pred", {})
            .get("channel_def", {})
        )
        labels = {str(name): int(index) for index, name in channels.items()}
        return labels or {"background": 0, "foreground": 1}

    def _description(self) -> str:
        meta = self._metadata()
        text = meta.get("description") or meta.get("task") or f"MONAI bundle {self.name}"
        version = meta.get("version")
        return f"{text} (bundle {version})" if version else str(text)

    @property
    def preprocess_key(self) -> str:
        return f"bundle:{self.folder}"

    def _parser(self) -> Any:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(self.folder / "configs" / "inference.json"))
        parser["bundle_root"] = str(self.folder)
        return parser

    def _pipelines(self) -> dict[str, Any]:
        """Pre- and postprocessing and the inferer, parsed once (postprocessing may invert preprocessing)."""
        with self._lock:
            if self._parsed is None:
                parser = self._parser()
                _without_io(parser, "preprocessing")
                _without_io(parser, "postprocessing")
                post = parser.get_parsed_content("postprocessing") if "postprocessing" in parser else None
                self._parsed = {
                    "preprocessing": parser.get_parsed_content("preprocessing"),
                    "postprocessing": post,
                    "inferer": parser.get_parsed_content("inferer"),
                }
            return self._parsed

    def load(self, weights: Path | None, device: Any) -> Any:
        import torch

        torchscript = self.folder / "models" / "model.ts"
        state = self.folder / "models" / "model.pt"
        if torchscript.is_file():
            network = torch.jit.load(str(torchscript), map_location=device)
        else:
            if not state.is_file():
                raise BundleError(f"Bundle {self.name} has neither models/model.pt nor models/model.ts")
            network = self._parser().get_parsed_content("network_def")
            checkpoint = torch.load(str(state), map_location="cpu", weights_only=True)
            if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
                checkpoint = checkpoint["model"]
            network.load_state_dict(checkpoint)
        return network.to(device).eval()

    def preprocess(self, image: Volume, device: Any) -> Any:
        """The bundle's preprocessing of the image handed over as ``LoadImage`` would produce it."""
        import torch
        from monai.data import MetaTensor

        affine = torch.as_tensor(image.geometry.affine, dtype=torch.float64)
        tensor = MetaTensor(
            torch.as_tensor(np.ascontiguousarray(image.array), dtype=torch.float32),
            affine=affine,
            meta={
                "original_affine": affine.clone(),
                "spatial_shape": np.asarray(image.geometry.shape),
                "original_channel_dim": "no_channel",
                "filename_or_obj": "image",
                "space": "RAS",
            },
        )
        return self._pipelines()["preprocessing"]({"image": tensor})

    def infer(self, model: Any, prepared: Any, request: InferRequest) -> InferOutput:
        import torch

        pipelines = self._pipelines()
        image = request.image
        started = time.perf_counter()
        with torch.no_grad():
            pred = pipelines["inferer"](inputs=prepared["image"][None].to(request.device), network=model)
        data = {**prepared, "pred": pred[0].detach().cpu()}
        infer_s = time.perf_counter() - started
        started = time.perf_counter()
        if pipelines["postprocessing"] is not None:
            data = pipelines["postprocessing"](data)
        out = data["pred"]
        array = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        if array.ndim == 4:
            array = array.argmax(axis=0) if array.shape[0] > 1 else array[0]
        label = np.rint(array).astype(np.uint8)
        out_affine = np.asarray(getattr(out, "affine", image.geometry.affine), dtype=np.float64)
        same_grid = label.shape == tuple(image.geometry.shape) and np.allclose(
            out_affine, image.geometry.affine, atol=1e-3
        )
        if not same_grid:
            label = resample_nearest(label, out_affine, image.geometry.shape, image.geometry.affine)
        post_s = time.perf_counter() - started
        return InferOutput(
            label=label,
            result={"label_names": dict(self.spec.labels)},
            latencies={"infer": infer_s, "invert": 0.0, "post": post_s},
        )
