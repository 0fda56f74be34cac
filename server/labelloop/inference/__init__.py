"""The inference service: warm models per device, an image cache, a bounded queue of requests, bundles."""

from labelloop.inference.bundle import BundleError, BundleTask
from labelloop.inference.cache import ByteLRU, nbytes
from labelloop.inference.devices import is_out_of_memory, resolve_device
from labelloop.inference.service import ImageSource, InferenceService, InferResult

__all__ = [
    "BundleError",
    "BundleTask",
    "ByteLRU",
    "ImageSource",
    "InferResult",
    "InferenceService",
    "is_out_of_memory",
    "nbytes",
    "resolve_device",
]
