"""Recognise a volume file by its content and read it into a ``VolumeSource``.

Supported (each with a real fixture or a generated test file, see docs/volumes.md):
DICOM OPT (``intake.dicom``), Heidelberg Heyex ``.vol`` and Heyex XML exports (read
with eyepy), and a ZIP holding one of: the B-scan images of a volume in order (natural
order of the file names), the DICOM files of one series, or a Heyex XML export.
Unsupported (no real fixture to test against): Heidelberg ``.e2e``, Topcon
``.fds``/``.fda``, Zeiss ``.img`` and other vendors' raw formats.
"""
from __future__ import annotations

import hashlib
import io
import re
import tempfile
import zipfile
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
from django.conf import settings
from eyepy.io.he import HeVolReader, HeXmlReader

from cases import images
from cases.models import Volume

from . import deid
from .dicom import dicom_read, dicom_volume, is_dicom
from .source import VolumeRejected, VolumeSource, check_frames, frame_png, frames_png, laterality_of

HEYEX_VOL_MAGIC = b"HSF-OCT-"
ZIP_MAGIC = b"PK\x03\x04"
VOLUME_SUFFIXES = (".dcm", ".vol", ".zip")
UNSUPPORTED_SUFFIXES = {
    ".e2e": "Heidelberg .e2e", ".sdb": "Heidelberg .sdb", ".fds": "Topcon .fds", ".fda": "Topcon .fda",
    ".img": "Zeiss Cirrus .img", ".oct": "Optovue/Bioptigen .oct",
}
HEYEX_PATTERNS = {1: "single line", 2: "circle", 3: "volume", 4: "fast volume", 5: "radial"}
_NATURAL = re.compile(r"(\d+)")


def looks_like_volume(name: str, head: bytes) -> bool:
    """Whether an uploaded file is a volume (by content; the name only for unsupported formats)."""
    suffix = PurePosixPath(name.lower()).suffix
    return (
        is_dicom(head) or head.startswith(HEYEX_VOL_MAGIC) or head.startswith(ZIP_MAGIC)
        or suffix in VOLUME_SUFFIXES or suffix in UNSUPPORTED_SUFFIXES
    )


def read_bounded(file: IO[bytes]) -> bytes:
    """Read a volume upload within ``OCT_VOLUME_MAX_BYTES``."""
    limit = settings.OCT_VOLUME_MAX_BYTES
    size = getattr(file, "size", None)
    if size is not None and size > limit:
        raise VolumeRejected(f"The volume file is too large ({images.human_size(size)}); the limit is {images.human_size(limit)}.")
    file.seek(0)
    data = file.read(limit + 1)
    if len(data) > limit:
        raise VolumeRejected(f"The volume file is too large; the limit is {images.human_size(limit)}.")
    if not data:
        raise VolumeRejected("The file is empty (0 bytes).")
    return data


def volume_source_read(data: bytes, *, name: str) -> VolumeSource:
    """Read one volume file (DICOM, Heyex .vol, ZIP) into a de-identified ``VolumeSource``."""
    suffix = PurePosixPath(name.lower()).suffix
    if is_dicom(data):
        return dicom_volume([dicom_read(data, name=name)], name=name)
    # Heyex writes "HSF-OCT-" first; files re-written by eyepy start with its own version
    # string, so the name decides when the magic is absent (the parser then checks).
    if data.startswith(HEYEX_VOL_MAGIC) or suffix == ".vol":
        return heyex_vol_read(data, name=name)
    if data.startswith(ZIP_MAGIC):
        return zip_read(data, name=name)
    if suffix in UNSUPPORTED_SUFFIXES:
        raise VolumeRejected(
            f"{name}: {UNSUPPORTED_SUFFIXES[suffix]} files are not supported; export the volume as DICOM "
            "(Ophthalmic Tomography), Heyex .vol or XML, or a ZIP of its B-scan images."
        )
    if suffix == ".dcm":
        raise VolumeRejected(f"{name}: not a DICOM file (no DICM preamble), or it is truncated.")
    raise VolumeRejected(f"{name}: not a recognised volume file (DICOM OPT, Heyex .vol or a ZIP of B-scans).")


def _iso_date(raw: Any) -> date | None:
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    try:
        return datetime.fromisoformat(str(raw)).date()
    except ValueError:
        return None


def _heyex_positions(eye_volume: Any) -> list[float | None]:
    metas = eye_volume.meta["bscan_meta"]
    try:
        starts = [np.asarray(m["start_pos"], dtype=float) for m in metas]
    except (KeyError, TypeError, ValueError):
        return [None] * len(metas)
    return [round(float(np.linalg.norm(s - starts[0])), 4) for s in starts]


def _heyex_source(eye_volume: Any, *, fmt: str, name: str, sha256: str, patient_id: str | None,
                  scan_pattern: str, removed: list[str]) -> VolumeSource:
    frames = list(np.asarray(eye_volume.data))
    check_frames(frames)
    meta = eye_volume.meta
    positions = _heyex_positions(eye_volume)
    localizer = getattr(eye_volume, "localizer", None)
    return VolumeSource(
        source_format=fmt,
        name=name,
        sha256=sha256,
        frames=frames_png(frames),
        laterality=laterality_of(str(meta.get("laterality", "") or "")),
        acquisition_date=_iso_date(meta.get("visit_date")),
        modality="OCT",
        scan_pattern=scan_pattern,
        device="Heidelberg Engineering",
        pixel_spacing_axial_mm=float(meta["scale_y"]) if meta.get("scale_y") else None,
        pixel_spacing_lateral_mm=float(meta["scale_x"]) if meta.get("scale_x") else None,
        slice_spacing_mm=round(float(meta["scale_z"]), 4) if meta.get("scale_z") else None,
        slice_positions_mm=positions,
        localizer_png=frame_png(np.asarray(localizer.data)) if localizer is not None else None,
        patient_pseudonym=deid.patient_pseudonym(patient_id) if patient_id else None,
        removed_tags=removed,
    )


def heyex_vol_read(data: bytes, *, name: str) -> VolumeSource:
    """Read a Heyex RAW ``.vol`` export (eyepy reads it from a file)."""
    with tempfile.NamedTemporaryFile(suffix=".vol") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            reader = HeVolReader(tmp.name)
            header = reader.parsed_file
            eye_volume = reader.volume
        except Exception as exc:  # noqa: BLE001 - the parser raises many types on damaged files
            raise VolumeRejected(f"{name}: the Heyex .vol file is truncated or corrupt ({type(exc).__name__}).") from None
    patient_id = str(header.get("patient_id", "") or "").strip() or None
    removed = ["DOB", "ID", "PID", "PatientID", "ReferenceID", "VID", "VisitID"]
    return _heyex_source(
        eye_volume, fmt=Volume.SourceFormat.HEYEX_VOL, name=name, sha256=hashlib.sha256(data).hexdigest(),
        patient_id=patient_id, scan_pattern=HEYEX_PATTERNS.get(int(header.get("scan_pattern", 0) or 0), ""),
        removed=removed,
    )


def heyex_xml_read(xml_path: Path, *, name: str, sha256: str) -> VolumeSource:
    """Read a Heyex XML export (the XML file beside its TIFF B-scans and localizer)."""
    try:
        eye_volume = HeXmlReader(str(xml_path)).volume
    except Exception as exc:  # noqa: BLE001 - the parser raises many types on damaged exports
        raise VolumeRejected(f"{name}: the Heyex XML export cannot be read ({type(exc).__name__}).") from None
    patient = eye_volume.meta.get("patient") or {}
    patient_id = str(patient.get("patient_id", "") or "").strip() or None
    removed = sorted(k for k in deid.HEYEX_PATIENT_FIELDS if k in patient)
    eye_volume.meta["patient"] = {}
    return _heyex_source(
        eye_volume, fmt=Volume.SourceFormat.HEYEX_XML, name=name, sha256=sha256, patient_id=patient_id,
        scan_pattern="", removed=removed,
    )


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in _NATURAL.split(name)]


def _zip_members(archive: zipfile.ZipFile, *, name: str) -> list[zipfile.ZipInfo]:
    members = [
        m for m in archive.infolist()
        if not m.is_dir() and not m.filename.startswith("__MACOSX/") and not PurePosixPath(m.filename).name.startswith(".")
    ]
    if not members:
        raise VolumeRejected(f"{name}: the ZIP archive is empty.")
    if len(members) > settings.OCT_VOLUME_MAX_SLICES + 8:
        raise VolumeRejected(f"{name}: the ZIP archive holds {len(members)} files; the limit is {settings.OCT_VOLUME_MAX_SLICES}.")
    total = sum(m.file_size for m in members)
    if total > settings.OCT_VOLUME_MAX_BYTES:
        raise VolumeRejected(
            f"{name}: the ZIP archive unpacks to {images.human_size(total)}; the limit is "
            f"{images.human_size(settings.OCT_VOLUME_MAX_BYTES)}."
        )
    return sorted(members, key=lambda m: _natural_key(m.filename))


def zip_read(data: bytes, *, name: str) -> VolumeSource:
    """Read a ZIP of one volume: B-scan images in order, DICOM files, or a Heyex XML export."""
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = _zip_members(archive, name=name)
            contents = [(m.filename, archive.read(m)) for m in members]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as exc:
        raise VolumeRejected(f"{name}: the ZIP archive is truncated or corrupt ({type(exc).__name__}).") from None
    if any(n.lower().endswith(".xml") for n, _ in contents):
        with tempfile.TemporaryDirectory() as tmp:
            xml_path = None
            for member, body in contents:
                target = Path(tmp) / PurePosixPath(member).name  # flattened: no path from the archive is trusted
                target.write_bytes(body)
                if target.suffix.lower() == ".xml":
                    xml_path = target
            return heyex_xml_read(xml_path, name=name, sha256=sha256)
    if all(is_dicom(body) for _, body in contents):
        instances = [dicom_read(body, name=f"{name}: {member}") for member, body in contents]
        source = dicom_volume(instances, name=name)
        source.sha256 = sha256
        return source
    return _zip_images(contents, name=name, sha256=sha256)


def _zip_images(contents: Iterable[tuple[str, bytes]], *, name: str, sha256: str) -> VolumeSource:
    converted = []
    for member, body in contents:
        try:
            converted.append(images.inspect_and_convert(body, max_pixels=settings.OCT_UPLOAD_MAX_PIXELS))
        except images.ImageRejected as exc:
            raise VolumeRejected(f"{name}: {member}: {exc.message}") from None
    sizes = {(c.width, c.height) for c in converted}
    if len(sizes) > 1:
        listed = ", ".join(f"{w}×{h}" for w, h in sorted(sizes))
        raise VolumeRejected(f"{name}: the B-scan images have mixed sizes ({listed}); a volume's B-scans share one size.")
    check_frames([np.zeros((c.height, c.width), dtype=np.uint8) for c in converted])
    return VolumeSource(
        source_format=Volume.SourceFormat.IMAGE_ZIP, name=name, sha256=sha256, frames=[c.png for c in converted],
        slice_positions_mm=[None] * len(converted),
    )


def volume_source_from_path(path: Path) -> VolumeSource:
    """Read a volume from the file system: a volume file, a Heyex XML export folder (or
    its .xml file), or a folder of one series' DICOM files."""
    path = Path(path)
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if xmls:
            return heyex_xml_read(xmls[0], name=path.name, sha256=_folder_sha256(path))
        files = sorted((p for p in path.iterdir() if p.is_file()), key=lambda p: _natural_key(p.name))
        instances = [dicom_read(p.read_bytes(), name=f"{path.name}/{p.name}") for p in files]
        if not instances:
            raise VolumeRejected(f"{path}: the folder holds no volume files.")
        source = dicom_volume(instances, name=path.name)
        source.sha256 = _folder_sha256(path)
        return source
    if not path.is_file():
        raise VolumeRejected(f"{path}: no such file or folder.")
    if path.suffix.lower() == ".xml":
        return heyex_xml_read(path, name=path.name, sha256=_folder_sha256(path.parent))
    if path.stat().st_size > settings.OCT_VOLUME_MAX_BYTES:
        raise VolumeRejected(f"{path}: the volume file is too large; the limit is {images.human_size(settings.OCT_VOLUME_MAX_BYTES)}.")
    return volume_source_read(path.read_bytes(), name=path.name)


def _folder_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(q for q in folder.iterdir() if q.is_file()):
        digest.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()
