"""The inference service: warm models per device, an image cache, a bounded queue of requests."""

from labelloop.inference.cache import ByteLRU, nbytes
from labelloop.inference.devices import is_out_of_memory, resolve_device
from labelloop.inference.service import ImageSource, InferenceService, InferResult

__all__ = [
    "ByteLRU",
    "ImageSource",
    "InferResult",
    "InferenceService",
    "is_out_of_memory",
    "nbytes",
    "resolve_device",
]
