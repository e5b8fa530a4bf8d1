"""Volumes: DICOM OPT (+ localizer), Heyex .vol and XML, ZIP of B-scans; de-identification;
bad input refused with a reason and nothing stored. DICOM files are generated here from
real B-scans of ``../shared/oct``; the Heyex files are the fixtures of ``OCT_FORMATS_DIR``."""
from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from PIL import Image
import pydicom
from pydicom.pixels import pixel_array
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from cases.models import Case, Patient, Scan, Volume
from inference.selectors import volume_reading
from inference.services import predict_scans
from intake import deid, volumes
from intake import services as intake_services
from intake.formats import volume_source_from_path
from intake.source import VolumeRejected, frame_png, frames_png
from tests.cases.conftest import case, media_root, stored_files, upload  # noqa: F401 - fixtures
from tests.factories import CaseFactory, bscan_bytes
from tests.inference.support import real_model_or_skip
from tests.intake import dicom_files
from verification.models import Review

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MPEG2_TRANSFER_SYNTAX = "1.2.840.10008.1.2.4.100"


@pytest.fixture
def frames(oct_data) -> list[np.ndarray]:
    return dicom_files.real_bscans(oct_data, count=4)


@pytest.fixture
def formats_dir(settings) -> Path:
    path = Path(settings.OCT_FORMATS_DIR)
    if not (path / "heyex_vol" / "test_volume.vol").is_file():
        pytest.skip(f"device-format fixtures not found at {path} (set OCT_FORMATS_DIR)")
    return path


@pytest.fixture(autouse=True)
def no_enqueue():
    """The readings are requested (asserted) but not run: that is inference's business."""
    with mock.patch("intake.services.scan_request_analysis"), \
            mock.patch("intake.services.scans_request_analysis") as request:
        yield request


def _requested_ids(request) -> list[int]:
    """The scan ids of every batch request, in the order asked."""
    return [i for call in request.call_args_list for i in call.kwargs["scan_ids"]]


def _png_pixels(field) -> np.ndarray:
    with field.open("rb") as fh:
        return np.asarray(Image.open(io.BytesIO(fh.read())).convert("L"))


def _nothing_stored(media_root) -> None:
    assert not Volume.objects.exists() and not Scan.objects.exists() and not Review.objects.exists()
    assert stored_files(media_root) == []


def _api_upload(api_client, clinician, case, *files, **extra):
    api_client.force_authenticate(clinician)
    return api_client.post(
        reverse("cases-api:case_scan_upload", args=[case.pk]), {"files": list(files), **extra}, format="multipart"
    )


# --- DICOM OPT ------------------------------------------------------------------------------


def test_dicom_opt_with_localizer_becomes_one_volume_of_reviewed_queued_scans(case, clinician, frames, no_enqueue):
    series = generate_uid()
    files = [
        upload("oct.dcm", dicom_files.opt_bytes(frames, series_uid=series)),
        upload("slo.dcm", dicom_files.op_bytes(frames[0][:200, :200], series_uid=series)),
    ]
    report = volumes.uploads_submit(case=case, files=files, uploaded_by=clinician)
    assert report.rejected == []
    (volume,) = report.volumes
    assert volume.source_format == Volume.SourceFormat.DICOM and volume.modality == "OPT"
    assert volume.laterality == Case.Eye.OD and volume.slice_count == 4
    assert volume.acquisition_date == dicom_files.acquisition_date()
    assert (volume.pixel_spacing_axial_mm, volume.pixel_spacing_lateral_mm) == (0.0039, 0.0114)
    assert volume.slice_spacing_mm == pytest.approx(0.12)
    assert volume.device == "Heidelberg Engineering Spectralis"
    assert _png_pixels(volume.localizer).shape == (200, 200)
    scans = list(volume.scans.order_by("slice_index"))
    assert [s.slice_index for s in scans] == [0, 1, 2, 3]
    assert [s.slice_position_mm for s in scans] == pytest.approx([0.0, 0.12, 0.24, 0.36])
    for scan, frame in zip(scans, frames, strict=True):
        assert np.array_equal(_png_pixels(scan.image), frame)
    # One review for the volume (graded as one eye), none per B-scan.
    assert Review.objects.filter(scan__volume=volume).count() == 0
    assert Review.objects.filter(volume=volume).count() == 1
    # One request for the whole volume, in slice order (model batches, not a task per B-scan).
    assert no_enqueue.call_count == 1 and _requested_ids(no_enqueue) == [s.pk for s in scans]


@pytest.mark.parametrize(
    ("syntax", "max_error"), [(JPEGBaseline8Bit, 12.0), (JPEG2000Lossless, 0.0), (RLELossless, 0.0)],
    ids=["jpeg-baseline", "jpeg2000-lossless", "rle"],
)
def test_compressed_transfer_syntaxes_decode(case, clinician, frames, syntax, max_error):
    source = volumes.volume_source_read(dicom_files.opt_bytes(frames[:2], transfer_syntax=syntax), name="c.dcm")
    volume = volumes.volume_submit(case=case, source=source, uploaded_by=clinician)
    for scan, frame in zip(volume.scans.order_by("slice_index"), frames, strict=False):
        error = np.abs(_png_pixels(scan.image).astype(float) - frame.astype(float)).mean()
        assert error <= max_error


@pytest.fixture
def dcmcjpls() -> None:
    if dicom_files.DCMCJPLS is None:
        reason = "dcmtk's dcmcjpls is not installed (apt-get install dcmtk)"
        if os.environ.get("OCT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (OCT_REQUIRE_SERVICES=1: services are required here)")
        pytest.skip(reason)


def _decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png))).astype(int)


@pytest.mark.parametrize(
    ("syntax", "jls_error", "bits"),
    [(JPEGLSLossless, 0, 8), (JPEGLSLossless, 0, 16), (JPEGLSNearLossless, 2, 8)],
    ids=["jpeg-ls-lossless", "jpeg-ls-lossless-12-bit", "jpeg-ls-near-lossless"],
)
def test_jpeg_ls_volumes_decode_to_the_real_bscans(case, clinician, frames, syntax, jls_error, bits):
    data = dicom_files.opt_bytes(frames[:2], transfer_syntax=syntax, jls_error=jls_error, bits=bits)
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == syntax
    source = volumes.volume_source_read(data, name="jls.dcm")
    scale = 16 if bits == 16 else 1  # 12-bit values in 16-bit words (dicom_files.opt_bytes)
    for png, frame in zip(source.frames, frames, strict=False):
        assert np.abs(_decoded(png) - frame.astype(int) * scale).max() <= jls_error
    volume = volumes.volume_submit(case=case, source=source, uploaded_by=clinician)
    assert volume.slice_count == 2 and volume.scans.count() == 2


@pytest.mark.parametrize("near_lossless", [0, 3], ids=["lossless", "near-lossless"])
def test_jpeg_ls_from_dcmtk_is_uploaded_with_its_localizer(api_client, clinician, case, frames, dcmcjpls,
                                                           near_lossless):
    series = generate_uid()
    data = dicom_files.dcmcjpls_bytes(dicom_files.opt_bytes(frames, series_uid=series), near_lossless=near_lossless)
    expected_syntax = JPEGLSNearLossless if near_lossless else JPEGLSLossless
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == expected_syntax
    # Both installed decoders (CharLS through pyjpegls, libjpeg through pylibjpeg) read dcmtk's stream alike.
    for plugin in ("pyjpegls", "pylibjpeg"):
        stack = pixel_array(io.BytesIO(data), decoding_plugin=plugin).astype(int)
        assert np.abs(stack - np.stack(frames).astype(int)).max() <= near_lossless
    localizer = dicom_files.op_bytes(frames[0][:128, :128], series_uid=series)
    response = _api_upload(api_client, clinician, case, upload("oct.dcm", data), upload("slo.dcm", localizer))
    assert response.status_code == 201, response.json()
    volume = Volume.objects.get()
    assert volume.slice_count == 4 and volume.localizer and volume.slice_spacing_mm == pytest.approx(0.12)
    for scan, frame in zip(volume.scans.order_by("slice_index"), frames, strict=True):
        assert np.abs(_png_pixels(scan.image).astype(int) - frame.astype(int)).max() <= near_lossless
    assert Review.objects.filter(volume=volume).count() == 1


def test_jpeg_ls_from_dcmtk_is_imported_by_command_into_the_device_patient(db, tmp_path, frames, dcmcjpls, capsys):
    path = tmp_path / "oct.dcm"
    path.write_bytes(dicom_files.dcmcjpls_bytes(dicom_files.opt_bytes(frames, bits=16)))
    call_command("import_volume", str(path))
    volume = Volume.objects.get()
    assert volume.case.patient.identifier == deid.patient_pseudonym(dicom_files.PATIENT_ID)
    assert volume.slice_count == 4 and "B-scans" in capsys.readouterr().out
    scan = volume.scans.get(slice_index=0)
    assert scan.original_mode == "I;16"
    assert np.array_equal(np.asarray(Image.open(scan.original)).astype(int), frames[0].astype(int) * 16)


def test_nothing_identifying_is_stored_or_shown(case, clinician, frames, media_root, client, api_client):
    series = generate_uid()
    report = volumes.uploads_submit(
        case=case,
        files=[upload("oct.dcm", dicom_files.opt_bytes(frames, series_uid=series)),
               upload("slo.dcm", dicom_files.op_bytes(frames[1][:128, :128], series_uid=series))],
        uploaded_by=clinician,
    )
    (volume,) = report.volumes
    assert {"PatientName", "PatientBirthDate", "InstitutionName", "ReferringPhysicianName", "PatientID"} <= set(
        volume.removed_tags
    )
    secrets = [*dicom_files.IDENTIFYING.values(), "Doe", "Kildare", "Elsewhere", "1948", dicom_files.PATIENT_ID]
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    blobs = {"database": dump.getvalue()}
    blobs.update({str(p): p.read_bytes().decode("latin-1") for p in stored_files(media_root)})
    client.force_login(clinician)
    blobs["case page"] = client.get(reverse("cases:case_detail", args=[case.pk])).content.decode()
    blobs["scan page"] = client.get(reverse("cases:scan_detail", args=[volume.scans.first().pk])).content.decode()
    api_client.force_authenticate(clinician)
    blobs["api"] = api_client.get(reverse("cases-api:scan_list") + f"?case={case.pk}").content.decode()
    # The birth year alone, as a date would show it (1948-07-13, 13.07.1948, 07/13/1948), not as digits
    # inside another number: a probability (0.01948...), a timestamp's microseconds, a UID or a hash.
    year = re.compile(r"(?<![0-9A-Fa-f])1948(?![0-9A-Fa-f])")
    for where, text in blobs.items():
        for secret in secrets:
            assert secret not in text or secret == "1948", f"{secret!r} found in {where}"
        no_decimals = re.sub(r"\d+\.\d+(?:[eE][-+]?\d+)?", "#", text)
        assert not year.search(no_decimals), f"the birth year found in {where}"


def test_device_patient_id_maps_to_one_pseudonymous_patient_across_visits(db, clinician, frames):
    first = volumes.volume_import(source=volumes.volume_source_read(dicom_files.opt_bytes(frames[:2]), name="a.dcm"),
                                  uploaded_by=clinician)
    later = dicom_files.opt_bytes(frames[2:], laterality="L")
    second = volumes.volume_import(source=volumes.volume_source_read(later, name="b.dcm"), uploaded_by=clinician)
    assert Patient.objects.count() == 1
    patient = Patient.objects.get()
    assert patient.identifier == deid.patient_pseudonym(dicom_files.PATIENT_ID)
    assert dicom_files.PATIENT_ID not in patient.identifier
    assert first.case.patient == second.case.patient and first.case != second.case
    assert (first.case.eye, second.case.eye) == ("OD", "OS")


def test_a_volume_of_another_patient_is_refused_in_a_device_patients_case(db, clinician, frames, media_root):
    patient = Patient.objects.create(identifier=deid.patient_pseudonym("SOMEONE-ELSE"))
    other = CaseFactory(patient=patient)
    with pytest.raises(volumes.DomainError, match="another patient"):
        volumes.volume_submit(case=other, source=volumes.volume_source_read(dicom_files.opt_bytes(frames[:1]), name="x.dcm"),
                              uploaded_by=clinician)
    _nothing_stored(media_root)


# --- bad input: a 4xx with a reason, and nothing stored ------------------------------------


def _truncated(frames):
    data = dicom_files.opt_bytes(frames)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda f: dicom_files.opt_bytes(f, sop_class=CT_IMAGE_STORAGE, modality="CT"), "not an OCT volume"),
        (_truncated, "truncated or corrupt"),
        (lambda f: dicom_files.opt_bytes(f)[:400], "truncated or corrupt"),
        (lambda f: dicom_files.opt_bytes(f, declared_syntax=MPEG2_TRANSFER_SYNTAX), "transfer syntax"),
    ],
    ids=["other-modality", "truncated-pixels", "truncated-header", "unknown-transfer-syntax"],
)
def test_bad_dicom_is_refused_by_the_api_and_nothing_is_stored(api_client, clinician, case, frames, media_root, build, reason):
    response = _api_upload(api_client, clinician, case, upload("bad.dcm", build(frames)))
    assert response.status_code == 400
    assert reason in response.json()["rejected"][0]["reason"]
    _nothing_stored(media_root)


def test_missing_laterality_is_asked_for_not_guessed(api_client, clinician, case, frames, media_root):
    data = dicom_files.opt_bytes(frames[:2], laterality=None)
    response = _api_upload(api_client, clinician, case, upload("nolat.dcm", data))
    assert response.status_code == 400
    assert "does not record which eye" in response.json()["rejected"][0]["reason"]
    _nothing_stored(media_root)
    response = _api_upload(api_client, clinician, case, upload("nolat.dcm", data), eye="OD")
    assert response.status_code == 201
    assert response.json()["volumes"][0]["laterality"] == "OD"


def test_chosen_eye_contradicting_the_file_is_refused(api_client, clinician, case, frames, media_root):
    response = _api_upload(api_client, clinician, case, upload("r.dcm", dicom_files.opt_bytes(frames[:1])), eye="OS")
    assert response.status_code == 400 and "records OD" in response.json()["rejected"][0]["reason"]
    _nothing_stored(media_root)


def test_zip_of_mixed_sizes_is_refused(api_client, clinician, case, media_root):
    response = _api_upload(api_client, clinician, case, upload("v.zip", _zip({"1.png": bscan_bytes(width=160),
                                                                              "2.png": bscan_bytes(width=192)})), eye="OD")
    assert response.status_code == 400 and "mixed sizes" in response.json()["rejected"][0]["reason"]
    _nothing_stored(media_root)


def test_a_failing_slice_rolls_back_the_whole_volume(case, clinician, frames, media_root):
    register = intake_services.scan_register
    calls = []

    def third_fails(**kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("slice failed")
        return register(**kwargs)

    with mock.patch("intake.services.scan_register", side_effect=third_fails), pytest.raises(RuntimeError):
        volumes.volume_submit(case=case, source=volumes.volume_source_read(dicom_files.opt_bytes(frames), name="v.dcm"),
                              uploaded_by=clinician)
    _nothing_stored(media_root)


def test_a_failing_review_rolls_back_the_whole_volume(case, clinician, frames, media_root):
    with mock.patch("intake.services.review_open", side_effect=RuntimeError("review failed")) as opened, \
            pytest.raises(RuntimeError):
        volumes.volume_submit(case=case, source=volumes.volume_source_read(dicom_files.opt_bytes(frames), name="v.dcm"),
                              uploaded_by=clinician)
    assert opened.call_count == 1  # one review for the volume, opened once
    _nothing_stored(media_root)


def test_a_failing_reading_request_rolls_back_the_whole_volume(case, clinician, frames, media_root, no_enqueue):
    no_enqueue.side_effect = RuntimeError("database gone")
    with pytest.raises(RuntimeError):
        volumes.volume_submit(case=case, source=volumes.volume_source_read(dicom_files.opt_bytes(frames), name="v.dcm"),
                              uploaded_by=clinician)
    _nothing_stored(media_root)


def test_the_same_volume_twice_is_a_duplicate(api_client, clinician, case, frames):
    data = dicom_files.opt_bytes(frames[:2])
    assert _api_upload(api_client, clinician, case, upload("a.dcm", data)).status_code == 201
    response = _api_upload(api_client, clinician, case, upload("a.dcm", data))
    assert response.status_code == 400 and "already in this case" in response.json()["rejected"][0]["reason"]
    assert Volume.objects.count() == 1


def test_unsupported_vendor_format_is_named(api_client, clinician, case, media_root):
    response = _api_upload(api_client, clinician, case, upload("scan.e2e", b"CMDb\x00" * 100))
    assert response.status_code == 400 and "Heidelberg .e2e files are not supported" in response.json()["rejected"][0]["reason"]


# --- ZIP, Heyex, the upload page and the command -------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return buf.getvalue()


def test_zip_of_bscans_keeps_natural_order(case, clinician):
    members = {f"vol/slice-{n}.png": bscan_bytes(seed=n) for n in (10, 2, 1)}
    source = volumes.volume_source_read(_zip(members), name="v.zip")
    volume = volumes.volume_submit(case=case, source=source, uploaded_by=clinician, eye="OD")
    scans = list(volume.scans.order_by("slice_index"))
    expected = [Image.open(io.BytesIO(members[f"vol/slice-{n}.png"])) for n in (1, 2, 10)]
    for scan, image in zip(scans, expected, strict=True):
        assert np.array_equal(_png_pixels(scan.image), np.asarray(image))


def test_heyex_vol_upload_through_the_case_page(client, clinician, case, formats_dir):
    client.force_login(clinician)
    data = (formats_dir / "heyex_vol" / "test_volume.vol").read_bytes()
    response = client.post(reverse("cases:scan_upload", args=[case.pk]), {"files": [upload("test_volume.vol", data)]})
    assert response.status_code == 200, response.content.decode()[:2000]
    volume = Volume.objects.get()
    assert volume.source_format == Volume.SourceFormat.HEYEX_VOL and volume.laterality == "OD"
    assert volume.slice_count == 10 and volume.scans.count() == 10 and volume.localizer
    assert volume.slice_spacing_mm == pytest.approx(0.0314, abs=1e-3)
    assert "PatientID" in volume.removed_tags
    assert "10 B-scans" in response.content.decode()


def test_heyex_xml_export_by_command_finds_the_same_patient_as_the_vol(db, formats_dir, capsys):
    call_command("import_volume", str(formats_dir / "heyex_vol" / "test_volume.vol"))
    call_command("import_volume", str(formats_dir / "heyex_xml" / "test_volume"))
    assert Patient.objects.count() == 1 and Volume.objects.count() == 2
    xml = Volume.objects.get(source_format=Volume.SourceFormat.HEYEX_XML)
    assert xml.slice_count == 10 and {"firstname", "lastname", "dob"} <= set(xml.removed_tags)
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    assert "John" not in dump.getvalue() and "Study-01" not in dump.getvalue()


def test_import_volume_command_refuses_and_stores_nothing(db, tmp_path, media_root):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 200)
    with pytest.raises(CommandError, match="1 of 1 volumes refused"):
        call_command("import_volume", str(bad), "--case", str(CaseFactory().pk))
    assert not Volume.objects.exists()


def test_truncated_heyex_vol_is_refused(formats_dir):
    data = (formats_dir / "heyex_vol" / "test_volume.vol").read_bytes()
    with pytest.raises(volumes.VolumeRejected, match="truncated or corrupt"):
        volumes.volume_source_read(data[: len(data) // 3], name="t.vol")


def test_volume_source_from_a_dicom_series_folder(tmp_path, frames):
    series = generate_uid()
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "1.dcm").write_bytes(dicom_files.opt_bytes(frames[:2], series_uid=series))
    (tmp_path / "s" / "2.dcm").write_bytes(dicom_files.op_bytes(frames[0][:64, :64], series_uid=series))
    source = volume_source_from_path(tmp_path / "s")
    assert len(source.frames) == 2 and source.localizer_png and source.laterality == "OD"


def test_case_page_shows_the_volume_viewer_and_the_localizer_is_private(client, clinician, case, frames,
                                                                        no_role_user):
    series = generate_uid()
    volumes.uploads_submit(
        case=case,
        files=[upload("oct.dcm", dicom_files.opt_bytes(frames, series_uid=series)),
               upload("slo.dcm", dicom_files.op_bytes(frames[0][:64, :64], series_uid=series))],
        uploaded_by=clinician,
    )
    volume = Volume.objects.get()
    client.force_login(clinician)
    html = client.get(reverse("cases:case_detail", args=[case.pk])).content.decode()
    assert "data-volume-viewer" in html and html.count('data-index="') == 4
    assert reverse("cases:volume_localizer", args=[volume.pk]) in html
    response = client.get(reverse("cases:volume_localizer", args=[volume.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    client.force_login(no_role_user)
    assert client.get(reverse("cases:volume_localizer", args=[volume.pk])).status_code in (302, 403)


def test_twelve_bit_frames_are_windowed_to_grey(case, clinician, frames):
    source = volumes.volume_source_read(dicom_files.opt_bytes(frames[:2], bits=16), name="12bit.dcm")
    volume = volumes.volume_submit(case=case, source=source, uploaded_by=clinician)
    scan = volume.scans.get(slice_index=0)
    assert scan.original_mode == "I;16"
    grey = _png_pixels(scan.image)
    assert grey.shape == frames[0].shape and np.corrcoef(grey.ravel(), frames[0].ravel())[0, 1] > 0.98


def test_single_frame_instances_of_mixed_sizes_are_refused(api_client, clinician, case, frames, media_root):
    series = generate_uid()
    small = frames[1][:400, :400]
    response = _api_upload(
        api_client, clinician, case,
        upload("1.dcm", dicom_files.opt_bytes(frames[:1], series_uid=series)),
        upload("2.dcm", dicom_files.opt_bytes([small], series_uid=series)),
    )
    assert response.status_code == 400 and "mixed sizes" in response.json()["rejected"][0]["reason"]
    _nothing_stored(media_root)


def test_zip_of_a_dicom_series_and_zip_of_a_heyex_xml_export(api_client, clinician, case, frames, formats_dir):
    series = generate_uid()
    dicom_zip = _zip({"s/oct.dcm": dicom_files.opt_bytes(frames[:2], series_uid=series),
                      "s/slo.dcm": dicom_files.op_bytes(frames[0][:64, :64], series_uid=series)})
    xml_dir = formats_dir / "heyex_xml" / "test_volume"
    xml_zip = _zip({f"export/{p.name}": p.read_bytes() for p in xml_dir.iterdir()})
    response = _api_upload(api_client, clinician, case, upload("series.zip", dicom_zip), upload("export.zip", xml_zip))
    assert response.status_code == 201, response.json()
    got = {v["source_format"]: v for v in response.json()["volumes"]}
    assert got["dicom"]["slice_count"] == 2 and got["heyex_xml"]["slice_count"] == 10
    assert Volume.objects.get(source_format="dicom").localizer


def test_a_real_volume_is_read_per_eye_by_the_shipped_model(case, clinician, oct_data, no_enqueue):
    """End to end on real CNV B-scans: every slice read by the real model, one per-eye reading."""
    model = real_model_or_skip()
    assert model is not None
    frames = dicom_files.real_bscans(oct_data, count=3, label="CNV")
    volume = volumes.volume_submit(case=case, source=volumes.volume_source_read(dicom_files.opt_bytes(frames),
                                                                                  name="cnv.dcm"), uploaded_by=clinician)
    ids = list(volume.scans.values_list("pk", flat=True))
    Scan.objects.filter(pk__in=ids).update(status=Scan.Status.QUEUED)  # as scan_request_analysis leaves them
    assert predict_scans(scan_ids=ids) == 3
    analysis = volume_reading(volume=volume)
    assert analysis.complete and analysis.reading.slices_read == 3
    assert analysis.reading.urgent and analysis.reading.diagnosis == "CNV"


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_frames_are_encoded_in_order_on_any_number_of_threads(settings, threads):
    settings.OCT_VOLUME_ENCODE_THREADS = threads
    rng = np.random.default_rng(11)
    frames = [rng.integers(0, 256, (40, 60), dtype=np.uint8) for _ in range(7)]
    encoded = frames_png(frames)
    assert encoded == [frame_png(f) for f in frames]
    assert all(np.array_equal(np.asarray(Image.open(io.BytesIO(png))), f) for png, f in zip(encoded, frames, strict=True))
    with pytest.raises(VolumeRejected):  # a frame refused on a thread is refused all the same
        frames_png([*frames[:3], np.zeros((4, 4, 2), np.uint8)])
