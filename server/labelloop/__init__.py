"""labelloop: an active-learning annotation server for 3D medical images, wire-compatible with MONAI Label."""

__version__ = "0.1.0"

__all__ = ["__version__"]
