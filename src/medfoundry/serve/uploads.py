"""Checks on what a user uploads: a file is data, never code (nothing is executed or unpickled).

An upload is streamed to disk with a size cap (:func:`save_stream`), then sniffed by content, not by
name (:func:`sniff_upload`): a NIfTI must start with a NIfTI-1/2 header (gzip-compressed or not)
whose dimensions are sane and whose voxel count is bounded (a small ``.nii.gz`` cannot promise
gigabytes); a zip (a DICOM series) is extracted by :func:`extract_zip_safely` only after every member
was checked: no absolute path, no ``..``, no link, a bounded member count, total size and
compression ratio. Each refusal is an :class:`UploadError` carrying the HTTP status to answer.
"""

from __future__ import annotations

import gzip
import stat
import struct
import zipfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medfoundry import MedfoundryError

ALLOWED_SUFFIXES = (".nii.gz", ".nii", ".zip")
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
NIFTI1_HEADER_BYTES = 348
NIFTI2_HEADER_BYTES = 540


class UploadError(MedfoundryError):
    """An upload refused by a check; ``status`` is the HTTP status code to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (str(self), self.status))


@dataclass
class UploadLimits:
    """What one upload may be; every field is a hard cap checked before the data is used."""

    max_upload_bytes: int = 512 * 2**20
    """Bytes of the upload as sent (the streamed body)."""
    max_voxels: int = 2**27
    """Voxels x channels a NIfTI header may declare (2**27: a 512 x 512 x 512 volume), so the
    decoded image stays bounded in memory whatever the compressed size."""
    max_zip_members: int = 4096
    """Files in a zipped DICOM series."""
    max_zip_total_bytes: int = 2 * 2**30
    """Uncompressed bytes of all zip members together."""
    max_zip_ratio: float = 100.0
    """Uncompressed / compressed bytes, per member and in total (a zip bomb has ratios of 1000+)."""


def upload_kind(filename: str) -> str:
    """``"nifti"`` or ``"zip"`` from an upload's file name; anything else is refused (415)."""
    name = filename.lower()
    if name.endswith((".nii.gz", ".nii")):
        return "nifti"
    if name.endswith(".zip"):
        return "zip"
    raise UploadError(
        f"file type not allowed: '{filename}' (allowed: {', '.join(ALLOWED_SUFFIXES)})", 415
    )


async def save_stream(chunks: AsyncIterator[bytes], path: Path, max_bytes: int) -> int:
    """Write the async byte ``chunks`` to ``path`` chunk by chunk; more than ``max_bytes`` stops the
    transfer and removes the partial file (413). Returns the byte count."""
    size = 0
    try:
        with open(path, "wb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise UploadError(f"upload larger than the limit of {_mb(max_bytes)}", 413)
                f.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise UploadError("empty upload (0 bytes)", 400)
    return size


def sniff_upload(path: Path, kind: str, limits: UploadLimits) -> None:
    """Check that the content at ``path`` is what its name (``kind``) says: NIfTI or zip magic and,
    for a NIfTI, a sane header within ``limits.max_voxels``. Refusals: 415 (not that kind of
    file) or 400 (a broken or oversized NIfTI header)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if kind == "zip":
        if head != ZIP_MAGIC or not zipfile.is_zipfile(path):
            raise UploadError("not a zip archive (content does not start with the zip magic)", 415)
        return
    if head[:2] == GZIP_MAGIC:
        try:
            with gzip.open(path, "rb") as g:
                header = g.read(NIFTI2_HEADER_BYTES)
        except (OSError, EOFError) as exc:
            raise UploadError(f"corrupt gzip stream ({exc})", 400) from None
    else:
        with open(path, "rb") as f:
            header = f.read(NIFTI2_HEADER_BYTES)
    check_nifti_header(header, limits.max_voxels)


def check_nifti_header(header: bytes, max_voxels: int) -> tuple[int, ...]:
    """The image dimensions ``(X, Y, Z[, T...])`` a NIfTI-1 or NIfTI-2 ``header`` declares (the
    first bytes of the decompressed file); raises :class:`UploadError` for anything else."""
    version = _nifti_version(header)
    if version is None:
        raise UploadError("not a NIfTI image (no NIfTI-1/NIfTI-2 header)", 415)
    endian = "<" if struct.unpack("<i", header[:4])[0] in (348, 540) else ">"
    if version == 1:
        dims = struct.unpack(endian + "8h", header[40:56])
        bitpix = struct.unpack(endian + "h", header[72:74])[0]
    else:
        dims = struct.unpack(endian + "8q", header[16:80])
        bitpix = struct.unpack(endian + "h", header[14:16])[0]
    ndim = dims[0]
    if not 3 <= ndim <= 7:
        raise UploadError(f"corrupt NIfTI header: {ndim} dimensions (expected 3 to 7)", 400)
    shape = tuple(int(d) for d in dims[1 : ndim + 1])
    if any(d < 1 for d in shape):
        raise UploadError(f"corrupt NIfTI header: dimensions {shape}", 400)
    if bitpix not in (1, 8, 16, 24, 32, 64, 128, 256):
        raise UploadError(f"corrupt NIfTI header: {bitpix} bits per voxel", 400)
    voxels = 1
    for d in shape:
        voxels *= d
    if voxels > max_voxels:
        raise UploadError(
            f"image too large: {voxels:,} voxels declared (limit {max_voxels:,})", 413
        )
    return shape


def _nifti_version(header: bytes) -> int | None:
    """1 or 2 when ``header`` starts a NIfTI-1 / NIfTI-2 file (either byte order), else None."""
    if len(header) < NIFTI1_HEADER_BYTES:
        return None
    sizes = {struct.unpack("<i", header[:4])[0], struct.unpack(">i", header[:4])[0]}
    n1 = len(header) >= NIFTI1_HEADER_BYTES and header[344:348] in (b"n+1\0", b"ni1\0")
    if n1 and 348 in sizes:
        return 1
    n2 = len(header) >= NIFTI2_HEADER_BYTES and header[4:8] in (b"n+2\0", b"ni2\0")
    if n2 and 540 in sizes:
        return 2
    return None


def check_zip(path: Path, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """Every file member of the zip at ``path`` after checking them all (400 or 413 otherwise)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"corrupt zip archive ({exc})", 400) from None
    if len(infos) > limits.max_zip_members:
        raise UploadError(f"zip holds {len(infos)} members (limit {limits.max_zip_members})", 413)
    files, total, packed = [], 0, 0
    for info in infos:
        _check_member_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UploadError(f"zip member '{info.filename}' is a symbolic link", 400)
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise UploadError(f"zip member '{info.filename}' is encrypted", 400)
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_zip_ratio:
            raise UploadError(
                f"zip member '{info.filename}' expands {ratio:.0f}x "
                f"(limit {limits.max_zip_ratio:g}x): a zip bomb?",
                413,
            )
        total += info.file_size
        packed += info.compress_size
        files.append(info)
    if total > limits.max_zip_total_bytes:
        raise UploadError(
            f"zip expands to {_mb(total)} (limit {_mb(limits.max_zip_total_bytes)})", 413
        )
    if not files:
        raise UploadError("zip archive holds no files", 400)
    return files


def _check_member_name(name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UploadError(f"zip member '{name}' has an absolute path", 400)
    if ".." in p.parts:
        raise UploadError(f"zip member '{name}' leaves the archive's folder ('..')", 400)
    if "\0" in name:
        raise UploadError("zip member name holds a NUL byte", 400)


def extract_zip_safely(path: Path, dest: Path, limits: UploadLimits) -> Path:
    """Extract the checked zip at ``path`` into ``dest`` (created), counting the bytes really
    written (a member lying about its size is stopped); returns the folder holding the most files,
    taken as the DICOM series folder."""
    members = check_zip(path, limits)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written = 0
    counts: dict[Path, int] = {}
    with zipfile.ZipFile(path) as zf:
        for info in members:
            target = (root / info.filename.replace("\\", "/")).resolve()
            if root not in target.parents:
                raise UploadError(f"zip member '{info.filename}' leaves the job folder", 400)
            target.parent.mkdir(parents=True, exist_ok=True)
            member = 0
            try:
                with zf.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(2**20):
                        member += len(chunk)
                        written += len(chunk)
                        if member > info.file_size or written > limits.max_zip_total_bytes:
                            raise UploadError("zip expands beyond its declared size", 413)
                        out.write(chunk)
            except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
                raise UploadError(f"corrupt zip member '{info.filename}' ({exc})", 400) from None
            except FileExistsError:
                raise UploadError(f"zip member '{info.filename}' appears twice", 400) from None
            counts[target.parent] = counts.get(target.parent, 0) + 1
    return max(counts, key=lambda d: (counts[d], -len(d.parts)))


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"
