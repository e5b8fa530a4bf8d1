"""Read DICOM Ophthalmic Tomography (OPT) volumes and their Ophthalmic Photography localizer.

One OPT instance (SOP class Ophthalmic Tomography Image Storage, multi-frame) is one
volume: each frame a B-scan, in frame order. An Ophthalmic Photography (OP) instance
of the same series, or one the OPT references, is its localizer. Every data set is
de-identified (``intake.deid``) before anything else is read from it.

Refused, with a reason (``VolumeRejected``, HTTP 400): not DICOM, truncated, another
SOP class or modality, a transfer syntax no installed decoder reads, pixel data that
does not decode, burned-in annotation, frames of mixed sizes (several single-frame
instances), laterality missing without an ``eye`` from the uploader (asked for, not
guessed).
"""
from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID,
)

from cases.models import Volume

from . import deid
from .source import VolumeRejected, VolumeSource, check_frames, frame_png, frames_png, laterality_of

logger = logging.getLogger(__name__)

OPT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.5.4"  # Ophthalmic Tomography Image Storage
OP_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.5.2",  # Ophthalmic Photography 16 Bit Image Storage
})
UNCOMPRESSED = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)
COMPRESSED_CANDIDATES = (
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
)


def supported_transfer_syntaxes() -> tuple[UID, ...]:
    """Uncompressed syntaxes and the compressed ones an installed decoder reads."""
    compressed = tuple(UID(ts) for ts in COMPRESSED_CANDIDATES if get_decoder(UID(ts)).is_available)
    return (*UNCOMPRESSED, *compressed)


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


@dataclass
class DicomInstance:
    """A parsed, de-identified instance and what pairing and the patient map need."""

    ds: Dataset
    kind: str  # "OPT" or "OP"
    series_uid: str
    sop_uid: str
    referenced_uids: frozenset[str]
    patient_pseudonym: str | None
    removed: list[str]
    sha256: str
    name: str
    pixels: np.ndarray | None = None  # decoded once, by ``_pixels``


def _referenced(ds: Dataset) -> frozenset[str]:
    uids: set[str] = set()
    for keyword in ("ReferencedImageSequence", "OphthalmicFrameLocationSequence", "SourceImageSequence"):
        for item in ds.get(keyword, []) or []:
            uid = item.get("ReferencedSOPInstanceUID")
            if uid:
                uids.add(str(uid))
    for frame in ds.get("PerFrameFunctionalGroupsSequence", []) or []:
        for item in frame.get("OphthalmicFrameLocationSequence", []) or []:
            uid = item.get("ReferencedSOPInstanceUID")
            if uid:
                uids.add(str(uid))
    return frozenset(uids)


def dicom_read(data: bytes, *, name: str) -> DicomInstance:
    """Parse one DICOM file, check it is an OPT volume or an OP localizer, de-identify it."""
    if not is_dicom(data):
        raise VolumeRejected(f"{name}: not a DICOM file (no DICM preamble).")
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - a damaged header raises many types (InvalidDicomError, EOFError, ...)
        raise VolumeRejected(f"{name}: the DICOM file is truncated or corrupt ({type(exc).__name__}).") from None
    sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", ""))
    modality = str(ds.get("Modality", "") or "")
    if sop_class == OPT_SOP_CLASS or (not sop_class and modality == "OPT"):
        kind = "OPT"
    elif sop_class in OP_SOP_CLASSES:
        kind = "OP"
    else:
        sop_name = UID(sop_class).name if sop_class else "no SOP class"
        raise VolumeRejected(
            f"{name}: a DICOM {modality or 'object'} ({sop_name}), not an OCT volume; "
            "accepted is Ophthalmic Tomography Image Storage (modality OPT)."
        )
    if "PixelData" not in ds:
        raise VolumeRejected(f"{name}: the DICOM file is truncated or corrupt: it holds no pixel data.")
    ts = ds.file_meta.get("TransferSyntaxUID")
    if ts is None or ts not in supported_transfer_syntaxes():
        label = f"{UID(ts).name} ({ts})" if ts else "none"
        raise VolumeRejected(
            f"{name}: the transfer syntax {label} is not supported; send uncompressed, JPEG, JPEG-LS, JPEG 2000 or RLE."
        )
    if str(ds.get("BurnedInAnnotation", "NO")).upper() == "YES":
        raise VolumeRejected(f"{name}: the images carry burned-in annotation (text in the pixels), which may identify the patient.")
    series_uid = str(ds.get("SeriesInstanceUID", ""))
    sop_uid = str(ds.get("SOPInstanceUID", ""))
    referenced = _referenced(ds)
    raw_id, removed = deid.dicom_deidentify(ds)
    pseudonym = deid.patient_pseudonym(raw_id) if raw_id else None
    return DicomInstance(
        ds=ds, kind=kind, series_uid=series_uid, sop_uid=sop_uid, referenced_uids=referenced,
        patient_pseudonym=pseudonym, removed=removed, sha256=hashlib.sha256(data).hexdigest(), name=name,
    )


def _pixels(inst: DicomInstance) -> np.ndarray:
    if inst.pixels is None:
        inst.pixels = _decode(inst)
    return inst.pixels


def pixels_check(inst: DicomInstance) -> None:
    """Decode the instance's pixels now (a receiver refuses a broken instance at once)."""
    arr = _pixels(inst)
    if arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise VolumeRejected(f"{inst.name}: the instance holds no image.")


def _decode(inst: DicomInstance) -> np.ndarray:
    ds = inst.ds
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - every decoder raises its own type on damaged data
        raise VolumeRejected(f"{inst.name}: the pixel data cannot be decoded (truncated or corrupt: {exc})"[:400]) from None
    if frames == 1 and (arr.ndim == 2 or (arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) > 1)):
        arr = arr[np.newaxis]
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        arr = arr.max() - arr
    return arr


def _date_of(ds: Dataset) -> date | None:
    for keyword in ("AcquisitionDateTime", "AcquisitionDate", "ContentDate", "SeriesDate", "StudyDate"):
        raw = str(ds.get(keyword, "") or "")[:8]
        if len(raw) == 8 and raw.isdigit():
            try:
                return date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
            except ValueError:
                continue
    return None


def _first(seq_parent: Dataset, *path: str) -> Dataset | None:
    node: Dataset | None = seq_parent
    for keyword in path:
        seq = node.get(keyword) if node is not None else None
        if not seq:
            return None
        node = seq[0]
    return node


def _spacing(ds: Dataset) -> tuple[float | None, float | None]:
    measures = _first(ds, "SharedFunctionalGroupsSequence", "PixelMeasuresSequence")
    spacing = (measures.get("PixelSpacing") if measures is not None else None) or ds.get("PixelSpacing")
    if spacing and len(spacing) == 2:
        return float(spacing[0]), float(spacing[1])
    return None, None


def _positions(ds: Dataset, count: int) -> list[float | None]:
    """Each frame's distance (mm) from the first frame, from ImagePositionPatient."""
    points: list[np.ndarray | None] = []
    for frame in (ds.get("PerFrameFunctionalGroupsSequence") or [])[:count]:
        plane = _first(frame, "PlanePositionSequence")
        pos = plane.get("ImagePositionPatient") if plane is not None else None
        points.append(np.asarray([float(v) for v in pos]) if pos and len(pos) == 3 else None)
    if len(points) != count or points[0] is None:
        return [None] * count
    origin = points[0]
    return [round(float(np.linalg.norm(p - origin)), 4) if p is not None else None for p in points]


def _slice_spacing(positions: list[float | None], ds: Dataset) -> float | None:
    known = [p for p in positions if p is not None]
    if len(known) >= 2:
        return round(float(np.median(np.diff(known))), 4)
    measures = _first(ds, "SharedFunctionalGroupsSequence", "PixelMeasuresSequence")
    spacing = measures.get("SpacingBetweenSlices") if measures is not None else None
    return float(spacing) if spacing else None


def dicom_volume(instances: Iterable[DicomInstance], *, name: str) -> VolumeSource:
    """Build one volume from the instances of one upload or one received series.

    Exactly one OPT instance (all its frames) or several single-frame OPT instances of
    one series (ordered by InstanceNumber); an OP instance of the series or one it
    references becomes the localizer.
    """
    instances = list(instances)
    opts = [i for i in instances if i.kind == "OPT"]
    ops = [i for i in instances if i.kind == "OP"]
    if not opts:
        raise VolumeRejected(f"{name}: only a localizer photograph (OP) arrived, no OCT volume (OPT).")
    if len({i.series_uid for i in opts}) > 1:
        raise VolumeRejected(f"{name}: the OCT instances belong to different series; send one volume at a time.")
    opts.sort(key=lambda i: int(i.ds.get("InstanceNumber", 0) or 0))
    stacks = [_pixels(i) for i in opts]
    frames = [frame for stack in stacks for frame in stack]
    check_frames(frames)
    head = opts[0]
    ds = head.ds
    positions = _positions(ds, len(frames)) if len(opts) == 1 else [None] * len(frames)
    axial, lateral = _spacing(ds)
    localizer = None
    wanted = {i.sop_uid for i in opts} | {u for i in opts for u in i.referenced_uids}
    for op in ops:
        if op.series_uid == head.series_uid or op.sop_uid in wanted:
            localizer = frame_png(_pixels(op)[0])
            break
    removed = sorted({k for i in instances for k in i.removed})
    digest = hashlib.sha256("".join(sorted(i.sha256 for i in instances)).encode()).hexdigest()
    device = " ".join(str(ds.get(k, "") or "") for k in ("Manufacturer", "ManufacturerModelName")).strip()
    return VolumeSource(
        source_format=Volume.SourceFormat.DICOM,
        name=name,
        sha256=digest if len(instances) > 1 else head.sha256,
        frames=frames_png(frames),
        laterality=laterality_of(str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "")),
        acquisition_date=_date_of(ds),
        modality=str(ds.get("Modality", "") or "OPT"),
        scan_pattern=_scan_pattern(ds),
        device=device,
        pixel_spacing_axial_mm=axial,
        pixel_spacing_lateral_mm=lateral,
        slice_spacing_mm=_slice_spacing(positions, ds),
        slice_positions_mm=positions,
        localizer_png=localizer,
        patient_pseudonym=next((i.patient_pseudonym for i in opts if i.patient_pseudonym), None),
        removed_tags=removed,
    )


def _scan_pattern(ds: Dataset) -> str:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return "volume" if frames > 1 else "line"
