"""The one error tree of labelloop.

Services raise these; ``labelloop.api.errors`` maps each branch to an HTTP status in one
place. Every class's docstring is its default message, so ``raise ImageNotFoundError()``
and ``raise ImageNotFoundError("Image 'x' not found")`` both read well.
"""

from __future__ import annotations

__all__ = [
    "LabelloopError",
    "InvalidInputError",
    "InvalidIdError",
    "InvalidParamsError",
    "NotFoundError",
    "ImageNotFoundError",
    "LabelNotFoundError",
    "SessionNotFoundError",
    "ModelNotFoundError",
    "ImageFormatError",
    "ImageReadError",
    "GeometryMismatchError",
    "PayloadTooLargeError",
    "ConflictError",
    "LabelConflictError",
    "FeatureDisabledError",
    "ModelNotReadyError",
    "BusyError",
    "AlreadyRunningError",
    "JobLostError",
    "JobNotFoundError",
    "AuthenticationError",
    "NotAuthenticatedError",
    "PermissionDeniedError",
    "TooManyAttemptsError",
    "UserNotFoundError",
    "QuotaExceededError",
    "StorageFullError",
]


class LabelloopError(Exception):
    """Something went wrong in labelloop."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or "").strip().splitlines()[0]
        super().__init__(self.message)


class InvalidInputError(LabelloopError):
    """The request is not valid."""


class InvalidIdError(InvalidInputError):
    """An id or tag is not valid."""


class InvalidParamsError(InvalidInputError):
    """The request parameters are not valid."""


class NotFoundError(LabelloopError):
    """Not found."""


class ImageNotFoundError(NotFoundError):
    """Image not found."""


class LabelNotFoundError(NotFoundError):
    """Label not found."""


class SessionNotFoundError(NotFoundError):
    """Session not found."""


class ModelNotFoundError(NotFoundError):
    """Model not found."""


class JobNotFoundError(NotFoundError):
    """No such task."""


class ImageFormatError(LabelloopError):
    """The file is not NIfTI, NRRD or a zipped DICOM series."""


class ImageReadError(LabelloopError):
    """The file looks like a supported format but cannot be read."""


class GeometryMismatchError(LabelloopError):
    """The label does not lie on its image's voxel grid."""


class PayloadTooLargeError(LabelloopError):
    """The upload is larger than the configured limit."""


class ConflictError(LabelloopError):
    """The request conflicts with the current state."""


class AlreadyRunningError(ConflictError):
    """A task of this kind is already queued or running."""


class JobLostError(ConflictError):
    """The job was declared lost: its claim was revoked, so its results are refused."""


class LabelConflictError(ConflictError):
    """The label changed since the version the client started from."""


class ModelNotReadyError(ConflictError):
    """The model has no trained version yet; train it first."""


class FeatureDisabledError(LabelloopError):
    """This feature is not enabled on this server."""


class BusyError(LabelloopError):
    """The server is busy; try again shortly."""


class AuthenticationError(LabelloopError):
    """Could not validate credentials"""


class NotAuthenticatedError(AuthenticationError):
    """Not authenticated"""


class PermissionDeniedError(LabelloopError):
    """You may not do this."""


class TooManyAttemptsError(LabelloopError):
    """Too many failed log-ins; wait a minute."""


class UserNotFoundError(NotFoundError):
    """No such user."""


class QuotaExceededError(LabelloopError):
    """Too many of these at once (429); remove some first."""


class StorageFullError(LabelloopError):
    """The storage set aside for this is full (507)."""
