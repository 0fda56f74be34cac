"""The options of the radiology trainers, as the typed models the server validates at submission.

``RadiologyTrainConfig`` is what both trainers take; ``DeepEditTrainConfig`` adds how clicks are
simulated. ``/info/`` shows ``options_view`` of each (``seed`` stays hidden).
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field

from labelloop.tasks import Flag, Fraction, TrainConfig, Whole

from ..clicks import ClickConfig

__all__ = ["DeepEditTrainConfig", "RadiologyTrainConfig"]


def _patience(value: int) -> int:
    if value != -1 and value < 1:
        raise ValueError("must be -1 (never) or a whole number 1 or more")
    return value


#: Epochs without improvement before stopping early: ``-1`` (never), or ``1`` or more.
Patience = Annotated[Whole, AfterValidator(_patience)]


class RadiologyTrainConfig(TrainConfig):
    """Options of a radiology training run (those of ``TrainConfig`` included).

    Attributes:
        learning_rate: AdamW learning rate, ``[0, 1]`` (``0`` freezes the weights).
        early_stop_patience: stop after this many epochs without improvement (at most 100,000);
            ``-1``: never.
        train_batch_size: images per step, 1 to 1024; each gives ``samples_per_image`` patches.
        samples_per_image: random patches cropped from each image per step, 1 to 1024.
        cache_bytes: memory budget of the cached, preprocessed cases, bytes (at most 1 TiB).
        device: as in ``TrainConfig``; with several GPUs, ``auto`` and ``cuda`` train on all of them.
        seed: also seeds patch sampling and simulated clicks.
    """

    option_order: ClassVar[tuple[str, ...]] = (
        "max_epochs",
        "val_split",
        "learning_rate",
        "early_stop_patience",
        "train_batch_size",
        "samples_per_image",
        "pretrained",
        "cache_bytes",
        "device",
    )

    learning_rate: Fraction = Field(1e-3, ge=0.0, le=1.0)
    early_stop_patience: Annotated[Patience, Field(le=100_000)] = 10
    train_batch_size: Whole = Field(2, ge=1, le=1024)
    samples_per_image: Whole = Field(2, ge=1, le=1024)
    cache_bytes: Whole = Field(2 * 1024**3, ge=0, le=2**40)

    @property
    def clicks(self) -> ClickConfig | None:
        """How DeepEdit clicks are simulated; ``None``: no clicks (segmentation)."""
        return None


class DeepEditTrainConfig(RadiologyTrainConfig):
    """Options of a DeepEdit training run: those of segmentation, and how clicks are simulated.

    Attributes:
        click_probability: chance that a training patch gets clicks, ``[0, 1]``.
        max_clicks: 1 to ``max_clicks`` (at most 100) clicks per label present in a patch.
        error_clicks: add one round of clicks where the current network is wrong.
    """

    click_probability: Fraction = Field(0.5, ge=0.0, le=1.0)
    max_clicks: Whole = Field(3, ge=1, le=100)
    error_clicks: Flag = True

    @property
    def clicks(self) -> ClickConfig:
        """These options as ``ClickConfig`` (which documents them in full)."""
        return ClickConfig(self.click_probability, self.max_clicks, self.error_clicks)
