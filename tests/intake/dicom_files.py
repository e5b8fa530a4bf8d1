"""Build DICOM test files from real B-scans (never committed: made in the tests)."""
from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, PYDICOM_IMPLEMENTATION_UID, generate_uid

from intake.dicom import OP_SOP_CLASSES, OPT_SOP_CLASS

OP_8BIT = sorted(OP_SOP_CLASSES)[0]
IDENTIFYING = {
    "PatientName": "Doe^Jane^Q",
    "PatientBirthDate": "19480713",
    "InstitutionName": "Saint Elsewhere Eye Hospital",
    "ReferringPhysicianName": "Kildare^James",
}
PATIENT_ID = "HOSP-0042-7731"


def real_bscans(root: Path, count: int = 4, *, size: tuple[int, int] = (512, 496), label: str = "") -> list[np.ndarray]:
    """``count`` real grey B-scans of one Kermany patient with the given size (width, height)
    (and class ``label`` when given)."""
    by_patient: dict[str, list[str]] = {}
    with (root / "MANIFEST.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["path"].startswith("kermany/") and (not label or row["class"] == label):
                by_patient.setdefault(row["patient_id"], []).append(row["path"])
    for paths in by_patient.values():
        frames = []
        for rel in sorted(paths):
            with Image.open(root / rel) as img:
                if img.size == size:
                    frames.append(np.asarray(img.convert("L")))
            if len(frames) == count:
                return frames
    raise LookupError(f"no patient with {count} B-scans of {size}")


def _base(sop_class: str, *, series_uid: str, modality: str, laterality: str | None, identifying: bool) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[series_uid])  # one study per series
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.PatientID = PATIENT_ID
    if identifying:
        for keyword, value in IDENTIFYING.items():
            setattr(ds, keyword, value)
    ds.Manufacturer = "Heidelberg Engineering"
    ds.ManufacturerModelName = "Spectralis"
    ds.AcquisitionDateTime = "20261102093015"
    ds.StudyDate = "20261102"
    if laterality:
        ds.ImageLaterality = laterality
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    return ds


def opt_bytes(
    frames: list[np.ndarray],
    *,
    laterality: str | None = "R",
    series_uid: str | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    identifying: bool = True,
    sop_class: str = OPT_SOP_CLASS,
    modality: str = "OPT",
    spacing_mm: float = 0.12,
    declared_syntax: str | None = None,
    bits: int = 8,
    jls_error: int = 0,
) -> bytes:
    """A multi-frame OPT file of ``frames`` (uint8), uncompressed or compressed by pydicom's encoders
    (JPEG baseline by Pillow; JPEG 2000, RLE; JPEG-LS by pyjpegls, near-lossless within ``jls_error``)."""
    ds = _base(sop_class, series_uid=series_uid or generate_uid(), modality=modality, laterality=laterality,
               identifying=identifying)
    rows, cols = frames[0].shape
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = rows, cols
    measures = Dataset()
    measures.PixelSpacing = [0.0039, 0.0114]
    measures.SliceThickness = spacing_mm
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for index in range(len(frames)):
        plane = Dataset()
        plane.ImagePositionPatient = [0.0, round(index * spacing_mm, 4), 0.0]
        item = Dataset()
        item.PlanePositionSequence = Sequence([plane])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    stack = np.stack(frames).astype(np.uint8)
    if bits == 16:
        # 12-bit detector values in 16-bit words, as OCT devices store them.
        stack = (stack.astype(np.uint16) * 16)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    if transfer_syntax == JPEGBaseline8Bit:
        encoded = []
        for frame in stack:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=92)
            encoded.append(buf.getvalue())
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
    elif declared_syntax:
        # Encapsulated bytes under a syntax no decoder here reads (e.g. MPEG-2 video).
        ds.file_meta.TransferSyntaxUID = declared_syntax
        ds.PixelData = encapsulate([frame.tobytes() for frame in stack])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = stack.tobytes()
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax, **({"jls_error": jls_error} if jls_error else {}))
    return _write(ds)


def op_bytes(image: np.ndarray, *, series_uid: str, laterality: str = "R") -> bytes:
    """An Ophthalmic Photography (8-bit) localizer of the same series."""
    ds = _base(OP_8BIT, series_uid=series_uid, modality="OP", laterality=laterality, identifying=True)
    ds.Rows, ds.Columns = image.shape
    ds.PixelData = image.astype(np.uint8).tobytes()
    return _write(ds)


DCMCJPLS = shutil.which("dcmcjpls")


def dcmcjpls_bytes(data: bytes, *, near_lossless: int = 0) -> bytes:
    """Re-encode an uncompressed DICOM file as JPEG-LS with dcmtk's ``dcmcjpls`` (a device-grade
    encoder, independent of the decoders under test): lossless, or near-lossless within
    ``near_lossless`` grey levels."""
    if DCMCJPLS is None:
        raise LookupError("dcmtk's dcmcjpls is not installed")
    mode = ["+en", "+md", str(near_lossless)] if near_lossless else ["+el"]
    with tempfile.TemporaryDirectory(prefix="jls-") as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        src.write_bytes(data)
        subprocess.run([DCMCJPLS, *mode, str(src), str(dst)], check=True, capture_output=True, timeout=120)
        return dst.read_bytes()


def _write(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def acquisition_date() -> date:
    return date(2026, 11, 2)
