"""labelloop.measurements pins its public surface and stays pure (numpy, scipy and the error tree)."""

from __future__ import annotations

import ast
from pathlib import Path

import labelloop.measurements as measurements

PACKAGE = Path(measurements.__file__).parent
ALLOWED = ("numpy", "scipy", "labelloop.errors", "labelloop.imaging", "labelloop.measurements")
STDLIB = ("__future__", "collections", "dataclasses", "datetime", "itertools", "math", "typing")


def test_the_public_surface_is_pinned() -> None:
    assert sorted(measurements.__all__) == [
        "BoundingBox",
        "Connectivity",
        "LabelMeasurements",
        "LabelStats",
        "StudyChange",
        "StudyVolumes",
        "VolumeChange",
        "measure_labels",
        "monai_centroids",
        "unnamed_label",
        "volume_changes",
        "voxel_volume_mm3",
    ]
    assert all(hasattr(measurements, name) for name in measurements.__all__)


def test_the_package_imports_only_numpy_scipy_and_the_layers_below() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.startswith(ALLOWED + STDLIB), f"{path.name} imports {name}"
