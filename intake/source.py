"""What an import reads out of a device file: a de-identified stack of B-scans.

Every reader (DICOM, Heyex ``.vol`` and XML, a ZIP of images) returns a
``VolumeSource``: the B-scans as PNG bytes in order, the technical metadata the
records keep, the pseudonym of the device's patient id (never the id) and what
de-identification removed. Pure data: no ORM, no storage.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from django.conf import settings
from PIL import Image

from cases.images import grey_png, window_to_uint8
from octportal.errors import DomainError

LATERALITY_BY_CODE = {"R": "OD", "L": "OS", "OD": "OD", "OS": "OS"}


class VolumeRejected(DomainError):
    """A volume file cannot be imported; ``message`` says why. Nothing is stored."""

    status_code = 400


class LateralityMissing(VolumeRejected):
    """The file does not say which eye: the uploader must (never guessed)."""


@dataclass
class VolumeSource:
    source_format: str
    name: str
    sha256: str
    frames: list[bytes]
    laterality: str | None = None
    acquisition_date: date | None = None
    modality: str = ""
    scan_pattern: str = ""
    device: str = ""
    pixel_spacing_axial_mm: float | None = None
    pixel_spacing_lateral_mm: float | None = None
    slice_spacing_mm: float | None = None
    slice_positions_mm: list[float | None] = field(default_factory=list)
    localizer_png: bytes | None = None
    patient_pseudonym: str | None = None
    removed_tags: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        """The fields a ``Volume`` row keeps, beyond format, eye, count and name."""
        return {
            "modality": self.modality[:16],
            "scan_pattern": self.scan_pattern[:64],
            "device": self.device[:120],
            "acquisition_date": self.acquisition_date,
            "pixel_spacing_axial_mm": self.pixel_spacing_axial_mm,
            "pixel_spacing_lateral_mm": self.pixel_spacing_lateral_mm,
            "slice_spacing_mm": self.slice_spacing_mm,
            "removed_tags": self.removed_tags,
        }


def frame_png(arr: np.ndarray) -> bytes:
    """Encode one decoded frame as PNG, without metadata, keeping 16-bit depth."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and arr.dtype == np.uint8:
        image = Image.fromarray(np.ascontiguousarray(arr[:, :, :3]))
    elif arr.ndim != 2:
        raise VolumeRejected(f"A frame has an unexpected shape {tuple(arr.shape)}; expected a 2-D grey image.")
    elif arr.dtype == np.uint8:
        return grey_png(arr)  # the grey copy itself (cases.images.slice_convert keeps it)
    elif arr.dtype.kind in "ui" and arr.min(initial=0) >= 0 and arr.max(initial=0) <= 65535:
        image = Image.fromarray(arr.astype(np.uint16))  # mode I;16
    else:
        image = Image.fromarray(window_to_uint8(arr))
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def frames_png(frames: Sequence[np.ndarray]) -> list[bytes]:
    """``frame_png`` of every frame, in order, on ``OCT_VOLUME_ENCODE_THREADS`` threads.

    Encoding is most of reading an uncompressed volume, and nothing else runs meanwhile:
    the workers wait for the volume's transaction. zlib and numpy release the GIL, so two
    threads halve it on two cores (105 to 56 ms for 49 B-scans of 512 x 496)."""
    threads = settings.OCT_VOLUME_ENCODE_THREADS
    if threads < 2 or len(frames) < 2:
        return [frame_png(f) for f in frames]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(frame_png, frames))


def check_frames(frames: list[np.ndarray], *, what: str = "B-scan") -> None:
    """Refuse an empty stack, too many slices, or frames of mixed sizes."""
    if not frames:
        raise VolumeRejected(f"The file holds no {what} images.")
    if len(frames) > settings.OCT_VOLUME_MAX_SLICES:
        raise VolumeRejected(
            f"The volume has {len(frames)} B-scans; the limit is {settings.OCT_VOLUME_MAX_SLICES}."
        )
    sizes = {tuple(np.asarray(f).shape[:2]) for f in frames}
    if len(sizes) > 1:
        listed = ", ".join(f"{w}×{h}" for h, w in sorted(sizes))
        raise VolumeRejected(f"The {what} images have mixed sizes ({listed}); a volume's B-scans share one size.")


def laterality_of(code: str | None) -> str | None:
    """OD/OS from a DICOM (R/L) or Heyex (OD/OS) code; None when absent or both/unknown."""
    return LATERALITY_BY_CODE.get((code or "").strip().upper())
