"""The inference task contract: what a model declares, and how it turns an image into a label map.

The server calls a task in three steps so that it can cache and time them:

1. ``load(weights, device)`` once per model version and device; the result stays warm;
2. ``preprocess(image, device)`` once per image content (cached by the image's SHA-256
   and ``preprocess_key``);
3. ``infer(model, prepared, request)`` per request; it returns the label map on the
   *original* image grid.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from labelloop.errors import InvalidParamsError
from labelloop.imaging import Volume

__all__ = [
    "InferSpec",
    "InferRequest",
    "InferOutput",
    "InferTask",
    "InferType",
    "Points",
    "config_choices",
    "parse_points",
]

InferType = Literal[
    "segmentation", "annotation", "classification", "deepgrow", "deepedit", "scribbles", "detection", "others"
]

#: Click coordinates: ``(N, 3)`` integer voxel indices ``[i, j, k]`` of the original image.
Points = npt.NDArray[np.int64]


@dataclass(frozen=True)
class InferSpec:
    """What ``/info/`` tells clients about a model (MONAI Label section 4).

    Attributes:
        type: how clients use it: ``segmentation`` runs on a whole image, ``deepgrow`` and
            ``deepedit`` take clicks.
        labels: label name -> value in the result map. An empty mapping means "whatever the
            user is segmenting" (value 1), as deepgrow models declare.
        dimension: 2 or 3.
        description: one line.
        config: user-tunable options; a list value means "choose one, the first is the default".
        needs_weights: whether a trained model version must exist before it can run.
    """

    type: InferType | str
    labels: Mapping[str, int]
    dimension: int
    description: str
    config: Mapping[str, Any] = field(default_factory=dict)
    needs_weights: bool = True


@dataclass(frozen=True)
class InferRequest:
    """One inference call.

    Attributes:
        params: the client's params (clicks, config choices, output options), already merged.
        image: the original image, ``(I, J, K)``, RAS affine.
        device: where the model lives.
        label: an optional label map sent with the request (scribbles, a previous result),
            on the image's grid.
        sw_batch_size: sliding-window batch size; the server lowers it after running out of memory.
    """

    params: Mapping[str, Any]
    image: Volume
    device: Any
    label: Volume | None = None
    sw_batch_size: int | None = None


@dataclass
class InferOutput:
    """A task's answer.

    Attributes:
        label: ``(I, J, K)`` integer label map on the original image's grid.
        result: JSON-able extras merged into the response params (``label_names`` at least).
        latencies: seconds per stage the task ran (``infer``, ``invert``, ``post``).
    """

    label: npt.NDArray[Any]
    result: dict[str, Any] = field(default_factory=dict)
    latencies: dict[str, float] = field(default_factory=dict)


class InferTask(ABC):
    """A model the server can host. Subclasses are pure ML code: no HTTP, no database."""

    spec: InferSpec

    @property
    def preprocess_key(self) -> str:
        """Identifies the preprocessing; tasks that share it share cached preprocessed images."""
        return type(self).__qualname__

    @abstractmethod
    def load(self, weights: Path | None, device: Any) -> Any:
        """Build the network on ``device`` with ``weights`` (``None`` when it needs none)."""

    @abstractmethod
    def preprocess(self, image: Volume, device: Any) -> Any:
        """Image -> whatever ``infer`` needs; the result is cached, so it must not be mutated later."""

    @abstractmethod
    def infer(self, model: Any, prepared: Any, request: InferRequest) -> InferOutput:
        """Run the model; returns the label map on ``request.image``'s grid."""


def config_choices(config: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The config values of a request: the client's choice where it sent one, else the default.

    A list in ``config`` means "one of these"; a value outside it is an ``InvalidParamsError``.
    """
    chosen: dict[str, Any] = {}
    for key, default in config.items():
        if isinstance(default, list):
            value = params.get(key, default[0] if default else None)
            if default and value not in default:
                raise InvalidParamsError(f"'{key}' must be one of {default}, not {value!r}")
        else:
            value = params.get(key, default)
            if isinstance(default, bool) and not isinstance(value, bool):
                raise InvalidParamsError(f"'{key}' must be true or false, not {value!r}")
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise InvalidParamsError(f"'{key}' must be a number, not {value!r}")
        chosen[key] = value
    return chosen


def parse_points(value: Any, name: str, shape: tuple[int, int, int]) -> Points:
    """Clicks ``[[i, j, k], ...]`` as an ``(N, 3)`` int64 array, each inside ``shape``.

    Raises ``InvalidParamsError`` naming ``name`` for anything else (a single point, floats
    far from integers, coordinates outside the image).
    """
    if value is None or value == []:
        return np.zeros((0, 3), dtype=np.int64)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidParamsError(f"'{name}' must be a list of [i, j, k] voxel indices") from exc
    if array.ndim != 2 or array.shape[1] != 3 or not np.all(np.isfinite(array)):
        raise InvalidParamsError(f"'{name}' must be a list of [i, j, k] voxel indices, got {value!r}")
    points = np.rint(array).astype(np.int64)
    bounds = np.asarray(shape)
    outside = np.any((points < 0) | (points >= bounds), axis=1)
    if np.any(outside):
        raise InvalidParamsError(
            f"'{name}' has points outside the image {tuple(shape)}: {points[outside].tolist()}"
        )
    return points
