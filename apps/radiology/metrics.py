"""How good a predicted label map is: per-case Dice, as training, validation and the benchmarks use it."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["dice_per_case"]


def dice_per_case(prediction: Any, truth: Any, n_labels: int) -> list[float | None]:
    """Mean foreground Dice of each case of ``(B, X, Y, Z)`` integer label maps.

    MONAI's Dice per label, background excluded; a label absent from both prediction and truth
    is left out of the mean (absent from one of them, it scores 0). ``None`` for a case where
    every foreground label is absent from both.
    """
    import torch
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    pred = one_hot(prediction[:, None].long(), num_classes=n_labels, dim=1)
    true = one_hot(truth[:, None].long(), num_classes=n_labels, dim=1)
    scores = compute_dice(pred, true, include_background=False, ignore_empty=False)
    spatial = tuple(range(2, pred.ndim))
    absent = (pred[:, 1:].sum(dim=spatial) == 0) & (true[:, 1:].sum(dim=spatial) == 0)
    means = torch.nanmean(torch.where(absent, torch.nan, scores.float()), dim=1)
    return [None if math.isnan(v) else float(v) for v in means.tolist()]
