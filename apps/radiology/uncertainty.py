"""How unsure the segmentation model is about an image: Monte Carlo dropout and test-time augmentation.

Both methods run the active ``segmentation`` version exactly as inference does (``normalise``:
RAS, 3 x 3 x 4 mm, HU window; the same ``unet(1, n)``; sliding windows of ``roi_size``), but
several times with something varied: the dropout masks (``EpistemicScoring``) or the input
(``TTAScoring``). From the ``T`` softmax maps ``p_t`` (``(C, X, Y, Z)`` float32 each) they take,
per voxel,

* the predictive entropy ``H[mean_t p_t]`` (all uncertainty, nats),
* the expected entropy ``mean_t H[p_t]`` (what each pass is unsure of on its own), and
* their difference, the mutual information (for dropout: BALD's epistemic uncertainty; for
  augmentations: the Jensen-Shannon divergence between the views), which is high only where
  the passes are each fairly sure and disagree,

and average the mutual information over the voxels that matter: those that some pass labels
foreground (the whole image when none does). That average, in nats, is the image's score.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from labelloop.imaging import Volume
from labelloop.tasks import ScoreOutput, ScoringMethod, ScoringSpec

from .config import NETWORK, NetworkConfig
from .networks import load_weights, unet
from .segmentation import sliding_window_logits
from .transforms import normalise

__all__ = ["EpistemicScoring", "TTAScoring", "summarise_passes", "embedding", "mirror_pairs"]

#: Side of the image thumbnail in the embedding (``THUMB ** 3`` values), and of the
#: per-label probability thumbnail (``(C - 1) * PROB_THUMB ** 3`` values).
THUMB = 4
PROB_THUMB = 2
_EPS = 1e-12


def _entropy(p: Any, dim: int) -> Any:
    """Shannon entropy in nats along ``dim`` of a probability tensor (``0 log 0 = 0``)."""
    import torch

    return torch.special.entr(p).sum(dim=dim)


def _unit(vector: Any) -> Any:
    norm = float(vector.norm())
    return vector / norm if norm > _EPS else vector * 0.0


def embedding(image: Any, mean_probs: Any) -> list[float]:
    """A small unit vector that describes an image, for diversity between images.

    Args:
        image: ``(1, X, Y, Z)`` float32, the normalised image (``[0, 1]``).
        mean_probs: ``(C, X, Y, Z)`` float32, the mean predicted probabilities (label value = channel).

    Returns:
        ``THUMB ** 3 + (C - 1) * PROB_THUMB ** 3`` floats: a ``THUMB``-cubed thumbnail of the image
        (its own mean removed) and a ``PROB_THUMB``-cubed thumbnail of each foreground label's
        probability, each normalised to length ``1 / sqrt(2)``, so cosine similarity weighs
        appearance and predicted anatomy equally.
    """
    import torch
    import torch.nn.functional as F

    thumb = F.adaptive_avg_pool3d(image[None].float(), THUMB).flatten()
    probs = F.adaptive_avg_pool3d(mean_probs[None, 1:].float(), PROB_THUMB).flatten()
    vector = torch.cat([_unit(thumb - thumb.mean()), _unit(probs)]) * math.sqrt(0.5)
    return [round(float(v), 5) for v in _unit(vector).tolist()]


def summarise_passes(
    probs: Any, labels: Mapping[str, int], image: Any, what: str
) -> tuple[float, dict[str, Any]]:
    """The score and details of ``T`` stochastic passes over one image.

    Args:
        probs: ``(T, C, X, Y, Z)`` float32 softmax probabilities on the normalised grid.
        labels: label name -> value (= channel).
        image: ``(1, X, Y, Z)`` float32, the normalised image (for the embedding).
        what: the name of the mutual information in ``details`` (``mutual_information`` for
            dropout, ``divergence`` for augmentations).

    Returns:
        ``(value, details)``: value is the mean mutual information (nats) over the voxels some pass
        labels foreground (all voxels if none does); details hold it again under ``what``, the
        mean predictive and expected entropies over the same voxels (nats), ``disagreement``
        (fraction of those voxels whose label differs between passes), ``region_fraction`` (their
        share of the image), ``label_fractions`` (share of the image each label takes in the mean
        prediction) and ``embedding``.
    """
    mean = probs.mean(dim=0)  # (C, X, Y, Z)
    predictive = _entropy(mean, dim=0)
    expected = _entropy(probs, dim=1).mean(dim=0)
    information = (predictive - expected).clamp_min(0.0)
    decisions = probs.argmax(dim=1)  # (T, X, Y, Z)
    region = (decisions != 0).any(dim=0)
    if not bool(region.any()):
        region = region.logical_not()
    differ = (decisions != decisions[:1]).any(dim=0)
    consensus = mean.argmax(dim=0)
    value = float(information[region].mean())
    details: dict[str, Any] = {
        what: round(value, 6),
        "entropy": round(float(predictive[region].mean()), 6),
        "expected_entropy": round(float(expected[region].mean()), 6),
        "disagreement": round(float(differ[region].float().mean()), 6),
        "region_fraction": round(float(region.float().mean()), 6),
        "label_fractions": {
            name: round(float((consensus == v).float().mean()), 6) for name, v in sorted(labels.items())
        },
        "passes": int(probs.shape[0]),
        "embedding": embedding(image, mean),
    }
    return value, details


def mirror_pairs(labels: Mapping[str, int]) -> list[tuple[int, int]]:
    """Label values that swap when the image is mirrored left-right: ``left X`` <-> ``right X``."""
    return [
        (value, labels["right " + name[len("left ") :]])
        for name, value in sorted(labels.items())
        if name.startswith("left ") and "right " + name[len("left ") :] in labels
    ]


def _dropout_layers(network: Any) -> list[Any]:
    import torch

    kinds = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d)
    return [m for m in network.modules() if isinstance(m, kinds)]


class _UNetScoring(ScoringMethod):
    """Loads the ``segmentation`` network as inference does; subclasses define the passes."""

    def __init__(self, labels: Mapping[str, int], network: NetworkConfig, seed: int) -> None:
        self.labels = dict(labels)
        self.network = network
        self.seed = seed

    def load(self, weights: Path, device: Any) -> Any:
        """``unet(1, n_labels)`` with ``weights``, on ``device``, in eval mode."""
        return load_weights(unet(1, len(self.labels), self.network), weights, device)

    @abstractmethod
    def _passes(self, model: Any, tensor: Any, device: Any) -> Any:
        """``(1, X, Y, Z)`` normalised image -> ``(T, C, X, Y, Z)`` float32 probabilities (CPU)."""

    @abstractmethod
    def _what(self) -> str:
        """The name of the score in ``details``."""

    def score(self, model: Any, image: Volume, device: Any) -> ScoreOutput:
        """Score one image (``(I, J, K)``, any spacing): see the module docstring."""
        import torch

        started = time.perf_counter()
        device = torch.device(device)
        prepared = normalise(image, device)
        # Seeded, so the same image and weights always score the same (and tests can rely on it).
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            probs = self._passes(model, prepared.tensor, device)
        value, details = summarise_passes(probs, self.labels, prepared.tensor.float().cpu(), self._what())
        details["seconds"] = round(time.perf_counter() - started, 3)
        return ScoreOutput(value=value, details=details)

    def _sliding(self, predictor: Callable[[Any], Any], tensor: Any, device: Any) -> Any:
        """``(1, X, Y, Z)`` -> ``(T, C, X, Y, Z)`` softmax probabilities, from sliding-window logits of
        ``predictor``, which maps ``(B, 1, x, y, z)`` windows to ``(B, T * C, x, y, z)`` logits (the
        windows' ``T`` passes as one batch of ``B * T``)."""
        logits = sliding_window_logits(
            predictor, tensor[None], device, sw_batch_size=self.network.sw_batch_size, config=self.network
        )
        n = len(self.labels)
        return logits[0].reshape(-1, n, *logits.shape[2:]).softmax(dim=1)


class EpistemicScoring(_UNetScoring):
    """Monte Carlo dropout: ``passes`` sliding-window predictions with dropout on (and only dropout).

    The score is BALD's mutual information between the prediction and the network's weights,
    averaged over the voxels some pass labels foreground: high where each pass is fairly sure
    and the passes disagree, i.e. where more labelled data would change the model. The passes of
    one window run as one batch. A 128 x 128 x 64 image (four 96 x 96 x 64 windows) takes about
    5 s on two CPU cores with 4 passes (test-time augmentation with 3 views: about 3 s).
    """

    def __init__(
        self, labels: Mapping[str, int], passes: int = 4, network: NetworkConfig = NETWORK, seed: int = 0
    ) -> None:
        if passes < 2:
            raise ValueError(f"Monte Carlo dropout needs at least 2 passes, not {passes}")
        if network.dropout <= 0.0:
            raise ValueError("Monte Carlo dropout needs a network with dropout > 0")
        super().__init__(labels, network, seed)
        self.passes = passes
        self.spec = ScoringSpec(
            description=(
                f"Monte Carlo dropout ({passes} passes, p={network.dropout:g}) of the active segmentation "
                "model: mean mutual information over the voxels it may label foreground"
            ),
            model="segmentation",
            config={"passes": passes, "dropout": network.dropout},
        )

    def _what(self) -> str:
        return "mutual_information"

    def _passes(self, model: Any, tensor: Any, device: Any) -> Any:
        passes = self.passes

        def predictor(windows: Any) -> Any:
            out = model(windows.repeat_interleave(passes, dim=0))  # (B * T, C, ...), T per window
            return out.reshape(windows.shape[0], -1, *out.shape[2:])

        dropout = _dropout_layers(model)
        try:
            for layer in dropout:
                layer.train()
            return self._sliding(predictor, tensor, device)
        finally:
            for layer in dropout:
                layer.eval()


class TTAScoring(_UNetScoring):
    """Test-time augmentation: the model in eval mode (no dropout) on altered copies of the image.

    Views: the image itself; its normalised intensities shifted by each of ``shifts`` (``0.05`` is
    30 HU at the default window, the size of the trainer's intensity augmentation) and scaled by
    each of ``scales``; and the image flipped along each axis in ``flips`` (0: left-right,
    1: posterior-anterior, 2: inferior-superior), the prediction flipped back (a left-right flip
    also swaps ``left X`` / ``right X`` back). Each window's views run as one batch.

    The UNet instance-normalises every block, so it is nearly blind to a uniform shift of a
    window's intensities: shifted views differ only through the zero padding at window borders,
    and their divergence is small on every image (it ranks images by how fragile the prediction
    is there). Flips change much more, but the model is trained without them (the kidneys' labels
    depend on the side), so a flipped abdomen is outside what it has seen and the views disagree on
    every image; flips are therefore off by default. The score is the Jensen-Shannon divergence
    between the views' softmax maps (their mutual information), averaged over the voxels some view
    labels foreground.
    """

    def __init__(
        self,
        labels: Mapping[str, int],
        shifts: Sequence[float] = (-0.05, 0.05),
        scales: Sequence[float] = (),
        flips: Sequence[int] = (),
        network: NetworkConfig = NETWORK,
        seed: int = 0,
    ) -> None:
        if not shifts and not scales and not flips:
            raise ValueError("test-time augmentation needs at least one shift, scale or flip")
        if any(axis not in (0, 1, 2) for axis in flips):
            raise ValueError(f"flips are spatial axes 0, 1, 2, not {list(flips)}")
        super().__init__(labels, network, seed)
        self.shifts = tuple(float(s) for s in shifts)
        self.scales = tuple(float(s) for s in scales)
        self.flips = tuple(int(a) for a in flips)
        self.mirror = mirror_pairs(labels)
        views = 1 + len(self.shifts) + len(self.scales) + len(self.flips)
        self.spec = ScoringSpec(
            description=(
                f"Test-time augmentation ({views} views: intensity shifts {list(self.shifts)}, scales "
                f"{list(self.scales)}, flips {list(self.flips)}) of the active segmentation model: "
                "mean divergence between the views"
            ),
            model="segmentation",
            config={"shifts": list(self.shifts), "scales": list(self.scales), "flips": list(self.flips)},
        )

    def _what(self) -> str:
        return "divergence"

    def _passes(self, model: Any, tensor: Any, device: Any) -> Any:
        import torch

        shifts, scales, flips, mirror = self.shifts, self.scales, self.flips, self.mirror

        def predictor(windows: Any) -> Any:
            # windows: (B, 1, x, y, z); flips act on the window, which for a convolutional network
            # is the image flipped with the window grid mirrored.
            views = [windows, *(windows + s for s in shifts), *(windows * s for s in scales)]
            views += [windows.flip(2 + axis) for axis in flips]
            out = model(torch.cat(views, dim=0))  # (V * B, C, x, y, z)
            parts = list(out.split(windows.shape[0], dim=0))
            for k, axis in enumerate(flips, start=1 + len(shifts) + len(scales)):
                back = parts[k].flip(2 + axis)
                if axis == 0 and mirror:
                    order = list(range(back.shape[1]))
                    for left, right in mirror:
                        order[left], order[right] = right, left
                    back = back[:, order]
                parts[k] = back
            return torch.stack(parts, dim=1).reshape(windows.shape[0], -1, *out.shape[2:])

        return self._sliding(predictor, tensor, device)
