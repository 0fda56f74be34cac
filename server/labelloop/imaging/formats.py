"""Recognise volume files by their content, and the extension rules of MONAI Label."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path, PurePosixPath
from typing import Literal

from labelloop.errors import ImageFormatError, ImageReadError

__all__ = [
    "FileKind",
    "sniff",
    "canonical_extension",
    "strip_extensions",
    "VOLUME_EXTENSIONS",
]

FileKind = Literal["nifti", "nifti-gz", "nrrd", "zip", "dicom"]

#: Extensions the datastore recognises when it registers a studies folder, longest first.
VOLUME_EXTENSIONS: tuple[str, ...] = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd")


def scrub(exc: BaseException, path: Path) -> str:
    """An exception's message without the server path in it (responses never show server paths)."""
    return str(exc).replace(str(path), "the file").replace(path.name, "the file")


def _describe(head: bytes) -> str:
    if not head:
        return "the file is empty"
    printable = head[:16].decode("latin-1")
    if all(32 <= ord(c) < 127 or c in "\r\n\t" for c in printable):
        return f"it starts with the text {printable[:16]!r}"
    return f"it starts with the bytes {head[:8].hex(' ')}"


def _is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348:
        for order in ("<", ">"):
            (size,) = struct.unpack(order + "i", head[:4])
            if size == 348 and head[344:347] in (b"n+1", b"ni1"):
                return True
            if size == 540 and head[4:7] in (b"n+2", b"ni2"):
                return True
    return False


def sniff(path: Path) -> FileKind:
    """What kind of volume file ``path`` holds, read from its first bytes, not its name.

    Raises:
        ImageFormatError: the content is none of NIfTI (plain or gzipped), NRRD, zip or DICOM.
        ImageReadError: a gzip stream that cannot be decompressed (a damaged file).
    """
    with open(path, "rb") as f:
        head = f.read(1024)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(544)
        except (OSError, EOFError, zlib.error) as exc:
            # A gzip stream that breaks off is a damaged file of a known kind, not an unknown format.
            raise ImageReadError(
                f"The file is gzip-compressed but cannot be decompressed: {scrub(exc, path)}"
            ) from exc
        if _is_nifti_header(inner):
            return "nifti-gz"
        raise ImageFormatError(
            f"The file is gzip-compressed but holds no NIfTI header; after decompression {_describe(inner)}"
        )
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if _is_nifti_header(head):
        return "nifti"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head[128:132] == b"DICM":
        return "dicom"
    raise ImageFormatError(f"The file is not NIfTI, NRRD or a zipped DICOM series: {_describe(head)}")


def canonical_extension(kind: FileKind, filename: str | None = None) -> str:
    """The extension a file of ``kind`` is stored under (``.seg.nrrd`` is kept when the name has it)."""
    if kind == "nifti-gz":
        return ".nii.gz"
    if kind == "nifti":
        return ".nii"
    if kind == "nrrd":
        if filename and filename.lower().endswith(".seg.nrrd"):
            return ".seg.nrrd"
        return ".nrrd"
    # DICOM series are converted to NIfTI on the way in.
    return ".nii.gz"


def strip_extensions(filename: str) -> str:
    """MONAI Label's id rule: the base name without its whole suffix chain.

    ``case.001.nii.gz`` -> ``case``; ``noext`` -> ``noext``; ``dir/x.nrrd`` -> ``x``.
    """
    name = PurePosixPath(filename.replace("\\", "/")).name
    stem = name.split(".", 1)[0] if not name.startswith(".") else name
    return stem
