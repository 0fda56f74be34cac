"""Does a label lie on its image's grid?"""

from __future__ import annotations

import numpy as np

from labelloop.errors import GeometryMismatchError
from labelloop.imaging.volume import Geometry

__all__ = ["check_same_grid"]


def check_same_grid(
    image: Geometry,
    label: Geometry,
    *,
    spacing_rtol: float = 1e-3,
    direction_atol: float = 1e-3,
    origin_tol_voxels: float = 0.5,
) -> None:
    """Raise ``GeometryMismatchError`` unless ``label`` has ``image``'s shape, spacing, direction, origin.

    Spacing is compared relatively (``spacing_rtol``), direction cosines absolutely
    (``direction_atol``), and the origins may differ by at most ``origin_tol_voxels`` of
    the smallest voxel size (mm).
    """
    if tuple(label.shape) != tuple(image.shape):
        raise GeometryMismatchError(
            f"The label's shape {tuple(label.shape)} differs from its image's shape {tuple(image.shape)}"
        )
    ispacing, lspacing = np.asarray(image.spacing), np.asarray(label.spacing)
    if not np.allclose(lspacing, ispacing, rtol=spacing_rtol, atol=0):
        raise GeometryMismatchError(
            f"The label's spacing {np.round(lspacing, 4).tolist()} mm differs from its image's "
            f"{np.round(ispacing, 4).tolist()} mm"
        )
    if not np.allclose(label.direction, image.direction, atol=direction_atol, rtol=0):
        raise GeometryMismatchError(
            "The label's orientation differs from its image's "
            f"(direction cosines {np.round(label.direction, 3).tolist()} vs "
            f"{np.round(image.direction, 3).tolist()})"
        )
    distance = float(np.linalg.norm(np.asarray(label.origin) - np.asarray(image.origin)))
    if distance > origin_tol_voxels * float(ispacing.min()):
        raise GeometryMismatchError(f"The label's origin lies {distance:.2f} mm from its image's origin")
